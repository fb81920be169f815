"""Train and eval transforms built from a model's DataConfig, with torchvision.transforms.v2 only.

Both pipelines turn the PIL image into a uint8 tensor first (`ToImage`), so every geometric and
colour operation runs on tensors (faster than PIL, and what AutoAugment expects), and only the
last steps make it float and normalise it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from effnet.data.errors import DataError
from effnet.spec.data import CROP_MODES, DataConfig

INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "nearest-exact": InterpolationMode.NEAREST_EXACT,  # Hugging Face's processors map PIL's NEAREST here
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}
AUTO_AUGMENT_POLICIES = {
    "imagenet": v2.AutoAugmentPolicy.IMAGENET,
    "cifar10": v2.AutoAugmentPolicy.CIFAR10,
    "svhn": v2.AutoAugmentPolicy.SVHN,
}


def interpolation_mode(name: str) -> InterpolationMode:
    """The torchvision mode for a DataConfig interpolation name (tensor resizing supports these)."""
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise DataError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {name!r}") from None


def _size_and_channels(config: DataConfig) -> tuple[int, int, int]:
    channels, height, width = config.input_size
    if channels not in (1, 3):
        raise DataError(f"input_size must have 1 or 3 channels, got {channels}")
    return channels, height, width


def _to_normalized_tensor(config: DataConfig, channels: int) -> list[v2.Transform]:
    mean: Sequence[float] = config.mean
    std: Sequence[float] = config.std
    steps: list[v2.Transform] = []
    if channels == 1:
        # A one-channel model sees luminance; its statistics are the mean of the RGB ones.
        steps.append(v2.Grayscale(num_output_channels=1))
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return steps


def make_train_transform(config: DataConfig, *, auto_augment: str | None = None, hflip: float = 0.5,
                         scale: tuple[float, float] = (0.08, 1.0),
                         ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> v2.Compose:
    """RandomResizedCrop to the input size, horizontal flip, optional AutoAugment, normalise.

    `auto_augment` names a policy (`imagenet`, as the paper's recipe; `cifar10`; `svhn`) or None.
    """
    channels, height, width = _size_and_channels(config)
    if not 0.0 <= hflip <= 1.0:
        raise DataError(f"hflip must be a probability in [0, 1], got {hflip}")
    interpolation = interpolation_mode(config.interpolation)
    steps: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResizedCrop((height, width), scale=scale, ratio=ratio, interpolation=interpolation, antialias=True),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    if auto_augment is not None:
        if auto_augment not in AUTO_AUGMENT_POLICIES:
            raise DataError(f"auto_augment must be one of {', '.join(AUTO_AUGMENT_POLICIES)} or None, "
                            f"got {auto_augment!r}")
        # AutoAugment's geometric ops on tensors support nearest and bilinear only.
        steps.append(v2.AutoAugment(AUTO_AUGMENT_POLICIES[auto_augment], interpolation=InterpolationMode.BILINEAR))
    return v2.Compose(steps + _to_normalized_tensor(config, channels))


def eval_resize_size(config: DataConfig) -> int | tuple[int, int]:
    """The resize before the centre crop: shorter side R / crop_pct for square inputs (timm's rule);
    both sides (aspect ratio lost) for non-square inputs or crop_mode "squash"."""
    _, height, width = _size_and_channels(config)
    if not 0.0 < config.crop_pct <= 1.0:
        raise DataError(f"crop_pct must be in (0, 1], got {config.crop_pct}")
    if config.crop_mode not in CROP_MODES:
        raise DataError(f"crop_mode must be one of {', '.join(CROP_MODES)}, got {config.crop_mode!r}")
    if height == width and config.crop_mode == "center":
        return math.floor(height / config.crop_pct)  # an int resizes the shorter side, keeping aspect
    return math.floor(height / config.crop_pct), math.floor(width / config.crop_pct)


def make_eval_transform(config: DataConfig) -> v2.Compose:
    """Resize to R / crop_pct, centre-crop R, normalise: the official evaluation preprocessing."""
    channels, height, width = _size_and_channels(config)
    steps: list[v2.Transform] = [
        v2.ToImage(),
        v2.Resize(eval_resize_size(config), interpolation=interpolation_mode(config.interpolation), antialias=True),
        v2.CenterCrop((height, width)),
    ]
    return v2.Compose(steps + _to_normalized_tensor(config, channels))
