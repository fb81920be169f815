"""Reading an image-folder tree: which splits it has, their class folders, and their files.

Two layouts are accepted (the ImageNet one and the "just classes" one):

    DIR/train/<class>/*.jpg  and optionally  DIR/val/<class>/*.jpg
    DIR/<class>/*.jpg        (split into train and val by seed, see effnet.data.folder)

Hidden files and folders (".DS_Store", ".ipynb_checkpoints") are ignored, unlike torchvision's
`find_classes`, which would take a hidden folder for a class.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

from torchvision.datasets.folder import IMG_EXTENSIONS

from effnet.data.errors import DataError
from effnet.data.images import check_image

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)
TRAIN_SPLIT_NAMES = ("train", "training")
VAL_SPLIT_NAMES = ("val", "validation", "valid", "test")
WHOLE_TREE = "all"  # the split name of a DIR/<class>/ tree before it is split
CHECK_CHUNK_SIZE = 64  # files per task when checking in worker processes


@dataclass(frozen=True)
class FolderLayout:
    root: Path
    splits: dict[str, Path] = field(default_factory=dict)  # "train"/"val", or WHOLE_TREE

    @property
    def has_splits(self) -> bool:
        return WHOLE_TREE not in self.splits


@dataclass
class ClassFiles:
    images: list[Path]  # files with an image extension, sorted
    others: list[Path]  # other visible files: reported, never loaded


def _visible(name: str) -> bool:
    return not name.startswith(".")


def find_layout(root: str | os.PathLike) -> FolderLayout:
    """Find the splits of `root`; raise DataError if it is missing or not a folder."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    train = next((root / name for name in TRAIN_SPLIT_NAMES if (root / name).is_dir()), None)
    val = next((root / name for name in VAL_SPLIT_NAMES if (root / name).is_dir()), None)
    if train is None and val is not None and val.name != "test":
        # Without this, "val" would silently become a class of a DIR/<class>/ tree.
        raise DataError(f"{root} has a {val.name}/ folder but no train/ folder: expected {root}/train/<class>/")
    if train is None:
        return FolderLayout(root, {WHOLE_TREE: root})
    splits = {"train": train}
    if val is not None:
        splits["val"] = val
    return FolderLayout(root, splits)


def list_class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the visible sub-folders of `split_dir` (the class names)."""
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and _visible(entry.name))


def list_class_files(class_dir: Path) -> ClassFiles:
    """All visible files under `class_dir` (recursively, following links as torchvision does)."""
    images: list[Path] = []
    others: list[Path] = []
    for directory, subdirectories, names in os.walk(class_dir, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if _visible(name))
        for name in sorted(names):
            if not _visible(name):
                continue
            path = Path(directory) / name
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    return ClassFiles(images, others)


def non_image_reason(path: Path) -> str:
    suffix = path.suffix or "(none)"
    return f"not an image file: extension {suffix} is not one of {', '.join(IMAGE_EXTENSIONS)}"


def check_files(paths: Sequence[Path], *, full_decode: bool, max_pixels: int | None,
                workers: int = 0) -> list[str | None]:
    """`check_image` over many files, in `workers` processes when > 0 (decoding is CPU-bound)."""
    check = partial(check_image, full_decode=full_decode, max_pixels=max_pixels)
    if workers <= 0 or len(paths) < 2 * CHECK_CHUNK_SIZE:
        return [check(path) for path in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check, paths, chunksize=CHECK_CHUNK_SIZE))
