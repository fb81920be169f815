"""Fashion-MNIST from its standard IDX files, found on disk or downloaded through torchvision.

Searched, in order: the explicit root (and torchvision's `<root>/FashionMNIST/raw` below it),
effnet's cache `~/.cache/effnet/fashion-mnist` (`$XDG_CACHE_HOME` respected), and Debian's
package `dataset-fashion-mnist`, which installs the four `.gz` files in /usr/share/datasets/fashion-mnist.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.error import URLError

import numpy as np
from torchvision.datasets import FashionMNIST

from effnet.data.arrays import ArrayImageDataset
from effnet.data.download import one_download_at_a_time
from effnet.data.errors import DataError, DatasetNotAvailableError
from effnet.data.idx import read_idx

FASHION_MNIST_CLASSES = list(FashionMNIST.classes)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_SUBDIR = Path("FashionMNIST") / "raw"


def _file_names(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def default_cache_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "effnet" / "fashion-mnist"


def fashion_mnist_search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for the IDX files, in order."""
    bases = ([Path(root).expanduser()] if root is not None else []) + [default_cache_dir()]
    return [folder for base in bases for folder in (base, base / TORCHVISION_SUBDIR)] + [DEBIAN_DIR]


def find_fashion_mnist(train: bool, search_dirs: Sequence[Path]) -> tuple[Path, Path] | None:
    """(images, labels) paths of the first folder that has both, plain or `.gz`; None if none has."""
    images_name, labels_name = _file_names(train)
    for folder in search_dirs:
        for suffix in ("", ".gz"):
            images, labels = folder / f"{images_name}{suffix}", folder / f"{labels_name}{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def _download(target: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        # torchvision prints progress on stdout; keep stdout for the CLI's --json documents. It fetches only
        # the files missing, so a process that waited for another's download fetches nothing.
        with one_download_at_a_time(target), contextlib.redirect_stdout(sys.stderr):
            downloaded = FashionMNIST(str(target), train=train, download=True)
    except (URLError, OSError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DatasetNotAvailableError(
            f"could not download Fashion-MNIST into {target / TORCHVISION_SUBDIR} ({reason}); offline, put "
            f"the four *-idx?-ubyte.gz files in {default_cache_dir()} or apt-get install dataset-fashion-mnist"
        ) from None
    return downloaded.data.numpy(), downloaded.targets.numpy()


def load_fashion_mnist(root: str | os.PathLike | None = None, *, train: bool = True,
                       transform: Callable | None = None, image_size: int | None = None,
                       download: bool = False, search_dirs: Sequence[Path] | None = None) -> ArrayImageDataset:
    """The train (60000) or test (10000) split of Fashion-MNIST as a data set of RGB images.

    `download=True` fetches through torchvision into `root` (or the cache) only when no searched
    folder has the files. `search_dirs` replaces the default search path (tests use it).
    """
    folders = list(search_dirs) if search_dirs is not None else fashion_mnist_search_dirs(root)
    found = find_fashion_mnist(train, folders)
    if found is not None:
        images, labels = read_idx(found[0]), read_idx(found[1])
    elif download:
        images, labels = _download(Path(root).expanduser() if root is not None else default_cache_dir(), train)
    else:
        names = ", ".join(f"{name}.gz" for name in _file_names(train))
        raise DatasetNotAvailableError(
            f"Fashion-MNIST not found (looked in {', '.join(map(str, folders))}): put {names} in "
            f"{default_cache_dir()}, apt-get install dataset-fashion-mnist, or pass download=True")
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"Fashion-MNIST files do not match: images {images.dtype} {images.shape}, "
                        f"labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise DataError(f"Fashion-MNIST labels must be 0..{len(FASHION_MNIST_CLASSES) - 1}, "
                        f"found {labels.min()}..{labels.max()}")
    return ArrayImageDataset(images, labels.tolist(), FASHION_MNIST_CLASSES, transform=transform,
                             image_size=image_size)
