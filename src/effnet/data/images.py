"""Safe image decoding: every awkward-but-valid image becomes RGB, every bad file becomes a reason.

`to_rgb` is the one place that decides how a mode maps to 8-bit RGB:

- EXIF orientation is applied first (`ImageOps.exif_transpose`), so a phone photo stored sideways
  is seen upright, and its width and height swap as a viewer would show them.
- 16-bit and 32-bit integer grayscale (`I;16*`, `I`) is scaled from 0..65535 to 0..255 with
  rounding. Pillow's own `convert("L")` clips instead (1000 -> 255), which turns most 16-bit
  images white.
- Alpha (`RGBA`, `LA`, `PA`, `P` with a transparency entry, premultiplied modes) is composited
  over white. Dropping alpha would expose whatever colour the encoder left under transparent
  pixels (often black, sometimes garbage); white is what a viewer or a web page shows.
- Float images (`F`) are clipped to 0..255, as Pillow does: there is no agreed range to scale from.
- Everything else (`L`, `1`, `P`, `CMYK`, `YCbCr`, ...) goes through Pillow's `convert("RGB")`.

Decompression bombs are refused before decoding: Pillow's own limit (`Image.MAX_IMAGE_PIXELS`,
turned from a warning into an error here) and an optional stricter `max_pixels`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from effnet.data.errors import ImageLoadError

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
UINT16_MAX = 65535
BACKGROUND = (255, 255, 255, 255)  # composite transparent pixels over white, see module docstring


def to_rgb(image: Image.Image) -> Image.Image:
    """Return `image` upright, as 8-bit RGB, following the rules in the module docstring."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES:
        # Widen first: "I" is signed 32-bit; the arithmetic below must not overflow uint16.
        values = np.asarray(image, dtype=np.int64).clip(0, UINT16_MAX)
        scaled = (values * 255 + UINT16_MAX // 2) // UINT16_MAX  # round to nearest
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        clipped = np.nan_to_num(values, nan=0.0).clip(0, 255).round()
        return Image.fromarray(clipped.astype(np.uint8), mode="L").convert("RGB")
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _pixel_limit(max_pixels: int | None) -> int | None:
    """The stricter of the caller's limit and Pillow's global one (None when both are off)."""
    limits = [limit for limit in (max_pixels, Image.MAX_IMAGE_PIXELS) if limit]
    return min(limits) if limits else None


def _open_checked(path: Path, max_pixels: int | None) -> Image.Image:
    """Open (header only) and refuse oversized images; raise ImageLoadError with a short reason."""
    if path.stat().st_size == 0:
        raise ImageLoadError(str(path), "empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; a bomb must be an error, not noise.
            # (catch_warnings is per process, not per thread: loader workers are processes.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(str(path), f"decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(str(path), "not an image Pillow can identify") from None
    limit = _pixel_limit(max_pixels)
    width, height = image.size
    if limit is not None and width * height > limit:
        with image:  # closes the file handle that Image.open kept
            pass
        raise ImageLoadError(str(path), f"decompression bomb: {width}x{height} pixels exceeds the limit of {limit}")
    return image


def check_image(path: str | os.PathLike, *, full_decode: bool = False, max_pixels: int | None = None) -> str | None:
    """Return why `path` is unusable, or None if it looks fine.

    The cheap check reads the header and runs Pillow's `verify` (catches wrong magic, empty files,
    bombs, and for PNG broken chunk checksums). A truncated JPEG passes it: only `full_decode`
    catches that, at the cost of decoding every pixel.
    """
    path = Path(path)
    try:
        image = _open_checked(path, max_pixels)
        with image:
            image.verify()
        if full_decode:
            load_image(path, max_pixels=max_pixels)
    except ImageLoadError as error:
        return error.reason
    except Exception as error:  # noqa: BLE001
        # Pillow's plugins signal broken data with many types (OSError, SyntaxError, struct.error,
        # ValueError, ...); for an untrusted file every one of them means "this file is bad".
        return _describe(error)
    return None


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
    """Decode `path` fully and return it as upright 8-bit RGB; raise ImageLoadError if it cannot be."""
    path = Path(path)
    try:
        with _open_checked(path, max_pixels) as image:
            image.load()
            return to_rgb(image)
    except ImageLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - see check_image: any decoder failure means a bad file
        raise ImageLoadError(str(path), _describe(error)) from None


def _describe(error: BaseException) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
