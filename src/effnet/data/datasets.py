"""`load_dataset`: one entry for `--data DIR|builtin|fashion-mnist|cifar10|cifar100`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from effnet.data.cifar import load_cifar
from effnet.data.digits import load_digits_dataset
from effnet.data.errors import DataError
from effnet.data.fashion_mnist import load_fashion_mnist
from effnet.data.folder import load_image_folder
from effnet.data.skipped import SkippedFile
from effnet.data.tree import find_layout, list_class_folders

DIGITS_NAMES = ("builtin", "digits")
FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist", "fashionmnist")
CIFAR_NAMES = ("cifar10", "cifar100")
DATASET_NAMES = DIGITS_NAMES + FASHION_MNIST_NAMES + CIFAR_NAMES
DIGITS_DEFAULT_SIZE = 32
DIGITS_VAL_FRACTION = 0.2  # 360 of 1797 images: enough for a stable top-1
FOLDER_VAL_FRACTION = 0.1  # for a DIR/<class>/ tree without a val folder


@dataclass
class DataSplits:
    name: str  # the data set's name, or the folder for an image-folder tree
    train: Dataset
    val: Dataset
    classes: list[str]

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files left out of either split, each once (split views of one tree share a record)."""
        seen: dict[str, SkippedFile] = {}
        for dataset in (self.train, self.val):
            for item in getattr(dataset, "skipped", []):
                seen.setdefault(item.path, item)
        return list(seen.values())


def default_data_root(name: str) -> Path:
    """Where named data sets live unless a root is given: `~/.cache/effnet/<name>`."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "effnet" / name


def check_source(source: str | os.PathLike | None) -> None:
    """Raise DataError unless `source` names a data set or a folder with class folders, reading no image:
    the check a search makes before it starts a training per candidate."""
    name = str(source) if source is not None else "builtin"
    if name in DATASET_NAMES:
        return
    if not Path(name).expanduser().exists():
        raise DataError(f"data {name!r} is neither a folder nor one of {', '.join(DATASET_NAMES)}")
    for split_dir in find_layout(name).splits.values():
        if not list_class_folders(split_dir):
            raise DataError(f"no class folders in {split_dir}: expected {split_dir}/<class>/<image files>")


def load_dataset(source: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                 train_transform: Callable | None = None, eval_transform: Callable | None = None,
                 image_size: int | None = None, val_fraction: float | None = None, seed: int = 0,
                 download: bool = False, verify: str = "header", workers: int = 0) -> DataSplits:
    """Train and val splits of a named data set or an image-folder tree.

    `source` is None or "builtin" (the digits), "fashion-mnist", "cifar10", "cifar100" (their test
    split is the val split), or a folder (`DIR/train` + `DIR/val`, or `DIR/<class>` split by
    `val_fraction` and `seed`). `val_fraction` defaults to 0.2 for the digits, 0.1 for folders.
    Names win over folders: write "./cifar10" for a folder of that name.
    `image_size` upscales the small in-memory images (digits default to 32); `verify` and
    `workers` set how image folders are checked up front.
    """
    name = str(source) if source is not None else "builtin"
    if name in DIGITS_NAMES:
        fraction = DIGITS_VAL_FRACTION if val_fraction is None else val_fraction
        train, val = load_digits_dataset(image_size=image_size or DIGITS_DEFAULT_SIZE, val_fraction=fraction,
                                         seed=seed, train_transform=train_transform, eval_transform=eval_transform)
        return DataSplits("digits", train, val, train.classes)
    if name in FASHION_MNIST_NAMES:
        train = load_fashion_mnist(root, train=True, transform=train_transform, image_size=image_size,
                                   download=download)
        val = load_fashion_mnist(root, train=False, transform=eval_transform, image_size=image_size,
                                 download=download)
        return DataSplits("fashion-mnist", train, val, train.classes)
    if name in CIFAR_NAMES:
        cifar_root = root if root is not None else default_data_root(name)
        train = load_cifar(name, cifar_root, train=True, transform=train_transform, download=download)
        val = load_cifar(name, cifar_root, train=False, transform=eval_transform, download=download)
        return DataSplits(name, train, val, list(train.classes))
    check_source(name)
    fraction = FOLDER_VAL_FRACTION if val_fraction is None else val_fraction
    train, val = load_image_folder(name, train_transform=train_transform, eval_transform=eval_transform,
                                   val_fraction=fraction, seed=seed, verify=verify, workers=workers)
    return DataSplits(str(Path(name).expanduser()), train, val, train.classes)
