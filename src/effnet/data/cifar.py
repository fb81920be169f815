"""CIFAR-10 and CIFAR-100 through torchvision, with one-line errors instead of RuntimeError tracebacks.

torchvision checks every batch file against its published MD5 (`_check_integrity`, `_load_meta`).
effnet keeps that check by default. `verify_checksums=False` selects subclasses whose file lists
carry no MD5, so torchvision's own `check_integrity(path, None)` checks only that each file exists:
everything else (paths, unpickling, reshaping, class names) stays torchvision's code. That is the
honest way to read CIFAR-format data that is not the byte-identical release: test fixtures, or a
re-pickled copy a user made. The files are still unpickled, so use it only on files you trust.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
from pathlib import Path
from typing import Callable
from urllib.error import URLError

from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from effnet.data.download import one_download_at_a_time
from effnet.data.errors import DataError, DatasetNotAvailableError
from effnet.data.skipped import SkippedFile


class Cifar10Dataset(CIFAR10):
    """torchvision's CIFAR10 with effnet's `skipped` (always empty: the batches are decoded whole)."""

    display_name = "CIFAR-10"

    @property
    def skipped(self) -> list[SkippedFile]:
        return []


class Cifar100Dataset(CIFAR100):
    """torchvision's CIFAR100 with effnet's `skipped`; targets are the 100 fine labels."""

    display_name = "CIFAR-100"

    @property
    def skipped(self) -> list[SkippedFile]:
        return []


class UncheckedCifar10Dataset(Cifar10Dataset):
    """CIFAR-10 reader that checks only that each file exists (see the module docstring)."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class UncheckedCifar100Dataset(Cifar100Dataset):
    """CIFAR-100 reader that checks only that each file exists (see the module docstring)."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


CIFAR_CLASSES: dict[str, tuple[type[CIFAR10], type[CIFAR10]]] = {
    "cifar10": (Cifar10Dataset, UncheckedCifar10Dataset),
    "cifar100": (Cifar100Dataset, UncheckedCifar100Dataset),
}


def _missing_files(dataset_class: type[CIFAR10], root: Path) -> list[Path]:
    names = [name for name, _ in dataset_class.train_list + dataset_class.test_list] + [dataset_class.meta["filename"]]
    folder = root / dataset_class.base_folder
    return [folder / name for name in names if not (folder / name).is_file()]


def load_cifar(name: str, root: str | os.PathLike, *, train: bool = True, transform: Callable | None = None,
               download: bool = False, verify_checksums: bool = True) -> CIFAR10:
    """The train (50000) or test (10000) split of CIFAR-10 (`name="cifar10"`) or CIFAR-100.

    Looks for torchvision's layout, `<root>/cifar-10-batches-py/` or `<root>/cifar-100-python/`.
    With `download=True` torchvision fetches and extracts the archive, only when files are missing, one process
    at a time (`one_download_at_a_time`).
    """
    if name not in CIFAR_CLASSES:
        raise DataError(f"unknown CIFAR data set {name!r}: expected one of {', '.join(CIFAR_CLASSES)}")
    checked, unchecked = CIFAR_CLASSES[name]
    dataset_class = checked if verify_checksums else unchecked
    root = Path(root).expanduser()
    folder = root / dataset_class.base_folder
    missing = _missing_files(dataset_class, root)
    if missing and download:
        with one_download_at_a_time(root):  # another process may be fetching the same files
            if _missing_files(dataset_class, root):
                _download(dataset_class, root)
    elif missing:
        raise DatasetNotAvailableError(
            f"{dataset_class.display_name} not found: {missing[0]} is missing; download {dataset_class.url} "
            f"and extract it into {root}, or pass download=True")
    try:
        return dataset_class(str(root), train=train, transform=transform, download=False)
    except RuntimeError:
        # Every file exists (checked above), so torchvision's "not found or corrupted" means corrupted.
        raise DataError(f"{dataset_class.display_name} files in {folder} do not match their published "
                        f"checksums (a partial or altered copy): delete {folder} and download again") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
        raise DataError(f"{dataset_class.display_name} files in {folder} are not CIFAR python batches: "
                        f"{type(error).__name__}: {error}") from None


def _download(dataset_class: type[CIFAR10], root: Path) -> None:
    try:
        # torchvision prints progress on stdout; keep stdout for the CLI's --json documents.
        with contextlib.redirect_stdout(sys.stderr):
            download_and_extract_archive(dataset_class.url, str(root), filename=dataset_class.filename,
                                         md5=dataset_class.tgz_md5)
    except (URLError, OSError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DatasetNotAvailableError(
            f"could not download {dataset_class.display_name} ({reason}); offline, fetch {dataset_class.url} "
            f"and extract it into {root}") from None
