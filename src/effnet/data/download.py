"""One download at a time into a folder, across processes.

A search's parallel candidates (`effnet search --parallel N`) and the ranks of a `torchrun` training each load a
named data set with `download=True`: where its files are missing, every process would fetch the same archive
into the same folder at once and read another's half-written file. The fetch runs under a lock file in the
target folder (`filelock`, which torch itself depends on; the operating system frees it if its holder dies), and
each caller checks again for the files once it holds the lock: the first fetches, the others find its files.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from effnet.data.errors import DatasetNotAvailableError

LOCK_NAME = ".effnet-download.lock"


@contextlib.contextmanager
def one_download_at_a_time(folder: Path) -> Iterator[None]:
    """Hold `folder`'s download lock (created with the folder) while the block runs; DatasetNotAvailableError
    if the folder cannot be made or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / LOCK_NAME))
        lock.acquire()
    except OSError as error:
        raise DatasetNotAvailableError(f"cannot download into {folder}: {error.strerror or error}") from None
    try:
        yield
    finally:
        lock.release()
