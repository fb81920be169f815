"""A data set over in-memory uint8 images (digits, Fashion-MNIST): PIL RGB out, optional upscale."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from effnet.data.errors import DataError
from effnet.data.skipped import SkippedFile


class ArrayImageDataset(Dataset):
    """Images as a uint8 array `(N, H, W)` or `(N, H, W, 3)` with integer targets and class names.

    Each item is a PIL RGB image, resized to `image_size` (bicubic) when given, then `transform`.
    Upscaling per item keeps memory at the source size: 1797 digits at 224x224x3 would be 270 MB.
    """

    def __init__(self, images: np.ndarray, targets: Sequence[int], classes: Sequence[str], *,
                 transform: Callable | None = None, image_size: int | None = None) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DataError(f"images must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) != len(targets):
            raise DataError(f"{len(images)} images but {len(targets)} targets")
        if image_size is not None and image_size < 1:
            raise DataError(f"image_size must be a positive number of pixels, got {image_size}")
        self.images = images
        self.targets = [int(target) for target in targets]
        self.classes = list(classes)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.transform = transform
        self.image_size = image_size

    @property
    def skipped(self) -> list[SkippedFile]:
        """Always empty: array data sets are decoded up front and have no files to skip."""
        return []

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> Image.Image:
        """The RGB image at `index`, resized but not transformed."""
        image = Image.fromarray(self.images[index]).convert("RGB")
        if self.image_size is not None and image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return image

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        sample = self.transform(image) if self.transform is not None else image
        return sample, self.targets[index]

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> "ArrayImageDataset":
        """A new data set with the chosen samples (a copy of their pixels) and its own transform."""
        chosen = np.asarray(indices, dtype=np.int64)
        return ArrayImageDataset(self.images[chosen], [self.targets[index] for index in chosen], self.classes,
                                 transform=transform, image_size=self.image_size)
