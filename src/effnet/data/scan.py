"""`scan_dataset`: check an image-folder tree without training, for `effnet data check DIR [--json]`.

Unlike the data sets, which raise on the first structural problem, the scan reports everything it
finds: every bad file with its reason, the usable images per split and class, empty classes, and
the problems that would stop training. It decodes every image by default (`full_decode=True`),
because a check is where the time to find truncated files is well spent.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from effnet.data.tree import (
    WHOLE_TREE,
    ClassFiles,
    check_files,
    find_layout,
    list_class_files,
    list_class_folders,
    non_image_reason,
)


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str
    split: str
    class_name: str


@dataclass(frozen=True)
class ClassCount:
    split: str
    class_name: str
    images: int  # usable images
    bad: int  # files left out


@dataclass
class ScanReport:
    root: str
    splits: list[str]  # "train", "val", or "all" for a DIR/<class>/ tree
    classes: list[ClassCount] = field(default_factory=list)
    bad_files: list[BadFile] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)  # "split/class" with no usable image
    problems: list[str] = field(default_factory=list)  # what would stop training, one line each

    @property
    def total_images(self) -> int:
        return sum(count.images for count in self.classes)

    @property
    def ok(self) -> bool:
        """True when training can use the tree as it is (bad files alone are skipped, not fatal)."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_images"] = self.total_images
        data["total_bad_files"] = len(self.bad_files)
        data["ok"] = self.ok
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def to_text(self) -> str:
        """A short human-readable report: counts per split, then every bad file and problem."""
        lines = [f"{self.root}: {self.total_images} usable images, {len(self.bad_files)} bad files"]
        for split in self.splits:
            counts = [count for count in self.classes if count.split == split]
            usable = sum(count.images for count in counts)
            lines.append(f"  {split}: {len(counts)} classes, {usable} images")
        lines.extend(f"  bad: {bad.path}: {bad.reason}" for bad in self.bad_files)
        lines.extend(f"  problem: {problem}" for problem in self.problems)
        return "\n".join(lines)


def scan_dataset(path: str | os.PathLike, *, full_decode: bool = True, max_pixels: int | None = None,
                 workers: int = 0) -> ScanReport:
    """Walk an image-folder tree and report its bad files, counts and problems.

    Raises DataError only when `path` is not a folder (or has val/ without train/); everything
    else is reported. `workers` > 0 checks files in that many processes.
    """
    layout = find_layout(path)
    report = ScanReport(root=str(layout.root), splits=list(layout.splits))
    listed: list[tuple[str, str, ClassFiles]] = []
    train_classes: list[str] | None = None
    for split, split_dir in layout.splits.items():
        folders = list_class_folders(split_dir)
        if not folders:
            report.problems.append(f"{split}: no class folders in {split_dir}")
            continue
        if split == "val" and train_classes is not None:
            unknown = sorted(set(folders) - set(train_classes))
            if unknown:
                report.problems.append(f"val: class folders {unknown} are not among the training classes")
        if split != "val":
            train_classes = folders
        listed.extend((split, name, list_class_files(split_dir / name)) for name in folders)
    # One check over every image, so `workers` processes are started once, not once per class.
    images = [image for _, _, files in listed for image in files.images]
    reasons = iter(check_files(images, full_decode=full_decode, max_pixels=max_pixels, workers=workers))
    for split, name, files in listed:
        _add_class(report, split, name, files, [next(reasons) for _ in files.images])
    return report


def _add_class(report: ScanReport, split: str, name: str, files: ClassFiles, reasons: list[str | None]) -> None:
    bad = [BadFile(str(file), non_image_reason(file), split, name) for file in files.others]
    bad.extend(BadFile(str(file), reason, split, name) for file, reason in zip(files.images, reasons) if reason)
    usable = sum(reason is None for reason in reasons)
    report.bad_files.extend(bad)
    report.classes.append(ClassCount(split, name, usable, len(bad)))
    if usable == 0:
        label = name if split == WHOLE_TREE else f"{split}/{name}"
        report.empty_classes.append(label)
        report.problems.append(f"{label}: no usable images ({len(bad)} files left out)")
