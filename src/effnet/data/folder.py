"""Image-folder data sets that survive bad files: torchvision's DatasetFolder plus a scan and a fallback.

Bad files are handled twice:

1. Up front, while listing the tree: files without an image extension, and (by default) every
   image's header is read and verified, so most bad files are left out before training starts.
   `verify="full"` decodes every image up front instead and catches truncated JPEGs too.
2. At load time: if a file still fails in `__getitem__` (truncated data only the full decode sees,
   a file changed on disk), it is recorded, a warning names it, and the *next* index that loads
   is returned instead (wrapping around). Returning a neighbour keeps the batch size and the
   sampler's order fixed, and the choice depends only on which files are bad, so a run with the
   same seed and the same files sees the same samples. Its cost is one duplicated sample per bad
   file per epoch, which is negligible next to stopping the run.

`dataset.skipped` lists every (path, reason) left out, from both stages and from every loader
worker (see effnet.data.skipped).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from torchvision.datasets import DatasetFolder
from torchvision.datasets.vision import StandardTransform

from effnet.data.errors import DataError, ImageLoadError
from effnet.data.images import load_image
from effnet.data.skipped import SkipLog, SkippedFile, warn_skipped
from effnet.data.splits import check_val_fraction, stratified_split
from effnet.data.tree import (
    IMAGE_EXTENSIONS,
    check_files,
    find_layout,
    list_class_files,
    list_class_folders,
    non_image_reason,
)

VERIFY_MODES = ("none", "header", "full")


@dataclass
class ScannedSplit:
    classes: list[str]
    samples: list[tuple[str, int]]
    skipped: list[SkippedFile]


def scan_split(split_dir: Path, classes: Sequence[str] | None = None, *, verify: str = "header",
               max_pixels: int | None = None, workers: int = 0) -> ScannedSplit:
    """List and check one split's images; raise DataError for a tree that cannot be trained on.

    `classes` fixes the class list (a val split must use the train split's indices); its folders
    must then be a subset of it.
    """
    if verify not in VERIFY_MODES:
        raise DataError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
    folders = list_class_folders(split_dir)
    if not folders:
        raise DataError(f"no class folders in {split_dir}: expected {split_dir}/<class>/<image files>")
    if classes is None:
        classes = folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"class folders {unknown} in {split_dir} are not among the training classes")
    class_to_index = {name: index for index, name in enumerate(classes)}
    candidates: list[tuple[Path, int]] = []
    skipped: list[SkippedFile] = []
    for name in folders:
        files = list_class_files(split_dir / name)
        if not files.images:
            raise DataError(f"class {name!r} in {split_dir} has no images "
                            f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})")
        skipped.extend(SkippedFile(str(path), non_image_reason(path)) for path in files.others)
        candidates.extend((path, class_to_index[name]) for path in files.images)
    reasons: list[str | None] = [None] * len(candidates)
    if verify != "none":
        reasons = check_files([path for path, _ in candidates], full_decode=verify == "full",
                              max_pixels=max_pixels, workers=workers)
    samples = [(str(path), target) for (path, target), reason in zip(candidates, reasons) if reason is None]
    skipped.extend(SkippedFile(str(path), reason) for (path, _), reason in zip(candidates, reasons) if reason)
    for item in skipped:
        warn_skipped(item)
    _check_every_class_usable(split_dir, folders, class_to_index, samples)
    return ScannedSplit(list(classes), samples, skipped)


def _check_every_class_usable(split_dir: Path, folders: list[str], class_to_index: dict[str, int],
                              samples: list[tuple[str, int]]) -> None:
    present = {target for _, target in samples}
    for name in folders:
        if class_to_index[name] not in present:
            raise DataError(f"class {name!r} in {split_dir} has no readable images: every file was skipped "
                            "(run `effnet data check` to see why)")


class ImageFolderDataset(DatasetFolder):
    """A DatasetFolder over one split folder (`<split>/<class>/<files>`) with `skipped` and a fallback."""

    def __init__(self, root: str | os.PathLike, *, transform: Callable | None = None,
                 target_transform: Callable | None = None, classes: Sequence[str] | None = None,
                 verify: str = "header", max_pixels: int | None = None, workers: int = 0) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        # DatasetFolder.__init__ calls find_classes and make_dataset below; they return this scan.
        scan = self._pending_scan = scan_split(root, classes, verify=verify, max_pixels=max_pixels, workers=workers)
        super().__init__(str(root), loader=partial(load_image, max_pixels=max_pixels),
                         extensions=IMAGE_EXTENSIONS, transform=transform, target_transform=target_transform)
        del self._pending_scan  # not kept: workers would receive every sample twice
        self.skip_log = SkipLog(scan.skipped)
        self._bad_indices: set[int] = set()  # per process: indices known to fail, not retried

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        classes = self._pending_scan.classes if hasattr(self, "_pending_scan") else self.classes
        return list(classes), {name: index for index, name in enumerate(classes)}

    def make_dataset(self, directory: str | os.PathLike, class_to_idx: dict[str, int],  # type: ignore[override]
                     extensions: tuple[str, ...] | None = None, is_valid_file: Callable | None = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        if not hasattr(self, "_pending_scan"):  # called again after construction: rescan the folder
            return scan_split(Path(directory), list(class_to_idx)).samples
        return self._pending_scan.samples

    @property
    def skipped(self) -> list[SkippedFile]:
        """Every file left out so far, with its reason (up-front scan and load-time failures)."""
        return self.skip_log.read()

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> "ImageFolderDataset":
        """A view on some samples with its own transform, sharing the class list and the skip record."""
        view = copy.copy(self)
        view.samples = [self.samples[index] for index in indices]
        view.targets = [target for _, target in view.samples]
        view.transform = transform
        view.transforms = StandardTransform(transform, self.target_transform)
        view._bad_indices = set()
        return view

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        count = len(self.samples)
        for offset in range(count):
            candidate = (index + offset) % count
            if candidate in self._bad_indices:
                continue
            path, target = self.samples[candidate]
            try:
                sample = self.loader(path)
            except ImageLoadError as error:
                self._bad_indices.add(candidate)
                self.skip_log.record(path, error.reason)
                continue
            if self.transform is not None:
                sample = self.transform(sample)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return sample, target
        raise DataError(f"no image under {self.root} could be loaded ({count} files tried)")


def load_image_folder(root: str | os.PathLike, *, train_transform: Callable | None = None,
                      eval_transform: Callable | None = None, val_fraction: float = 0.1, seed: int = 0,
                      verify: str = "header", max_pixels: int | None = None,
                      workers: int = 0) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """Train and val data sets from `root/train` + `root/val`, or from `root/<class>` split by seed.

    Without a val folder, `val_fraction` of each class (chosen by `seed`) becomes the val split;
    both views then share one skip record for the whole tree.
    """
    layout = find_layout(root)
    options = {"verify": verify, "max_pixels": max_pixels, "workers": workers}
    if "val" in layout.splits:
        train = ImageFolderDataset(layout.splits["train"], transform=train_transform, **options)
        val = ImageFolderDataset(layout.splits["val"], transform=eval_transform, classes=train.classes, **options)
        return train, val
    check_val_fraction(val_fraction)
    whole = ImageFolderDataset(next(iter(layout.splits.values())), **options)
    train_indices, val_indices = stratified_split(whole.targets, val_fraction, seed)
    if not val_indices:
        raise DataError(f"the val split of {layout.root} would have no images: {len(whole)} images with "
                        f"val_fraction={val_fraction}; raise it or add a {layout.root}/val/<class>/ folder")
    return whole.subset(train_indices, train_transform), whole.subset(val_indices, eval_transform)
