"""The built-in data set: scikit-learn's handwritten digits, real data that needs no network.

1797 grayscale 8x8 images of the digits 0-9 (UCI optdigits test set), shipped inside the
scikit-learn wheel. Small enough to train on a CPU in seconds, real enough that accuracy means
something. Pixels 0..16 are scaled to 0..255; images are upscaled to `image_size` and made RGB.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

from effnet.data.arrays import ArrayImageDataset
from effnet.data.errors import DatasetNotAvailableError
from effnet.data.splits import stratified_split

DIGITS_CLASSES = [str(digit) for digit in range(10)]
DIGITS_COUNT = 1797
DIGITS_PIXELS = 64
DIGITS_MAX_VALUE = 16  # sklearn's digits count ink in 4x4 blocks: 0..16


def _read_shipped_csv() -> np.ndarray | None:
    """The (1797, 65) table of sklearn's digits.csv.gz, found without importing sklearn.

    Importing sklearn.datasets costs over a second; the file it would read is 60 kB. If the file
    is not where sklearn keeps it (a future layout), return None and use the public API.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        return None
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    return table if table.shape == (DIGITS_COUNT, DIGITS_PIXELS + 1) else None


@functools.lru_cache(maxsize=1)
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 (N, 8, 8) in 0..255, and their labels (cached: they never change)."""
    table = _read_shipped_csv()
    if table is not None:
        pixels, targets = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits  # imported here: only this data set needs sklearn
        except ImportError:
            raise DatasetNotAvailableError("the built-in digits data set needs scikit-learn: "
                                           "pip install scikit-learn") from None
        digits = load_digits()
        pixels, targets = digits.images, digits.target
    images = np.rint(pixels * (255.0 / DIGITS_MAX_VALUE)).clip(0, 255).astype(np.uint8)
    images.flags.writeable = False  # shared by every caller through the cache
    return images, targets.astype(np.int64)


def load_digits_dataset(*, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0,
                        train_transform: Callable | None = None,
                        eval_transform: Callable | None = None) -> tuple[ArrayImageDataset, ArrayImageDataset]:
    """The digits split into (train, val) by `seed`, stratified per digit, upscaled to `image_size`."""
    images, targets = digits_images()
    whole = ArrayImageDataset(images, targets.tolist(), DIGITS_CLASSES, image_size=image_size)
    train_indices, val_indices = stratified_split(whole.targets, val_fraction, seed)
    return whole.subset(train_indices, train_transform), whole.subset(val_indices, eval_transform)
