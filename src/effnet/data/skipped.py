"""The record of files a data set leaves out, shared between the main process and loader workers.

DataLoader workers are separate processes, so a file that fails to decode inside a worker would be
invisible to the trainer if it were only appended to a Python list. Each data set therefore owns a
small append-only log file (created only when a load-time failure happens): one line per skipped
file, written with a single `write` in append mode, which POSIX keeps whole even with several
writers. `SkipLog.read()` merges it with the skips found by the up-front scan.
"""
from __future__ import annotations

import os
import tempfile
import uuid
import warnings
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from effnet.data.errors import SkippedFileWarning


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def warn_skipped(skipped: SkippedFile) -> None:
    warnings.warn(f"skipping {skipped.path}: {skipped.reason}", SkippedFileWarning, stacklevel=3)


def _remove_quietly(path: str, owner_pid: int) -> None:
    # A forked worker inherits the finalizer too; only the process that chose the name cleans up.
    if os.getpid() != owner_pid:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class SkipLog:
    """Skips found up front (a list) plus skips found at load time (a per-data-set log file)."""

    def __init__(self, found_up_front: list[SkippedFile] | None = None) -> None:
        self.up_front = list(found_up_front or [])
        # Only the name is chosen here; workers create the file on their first failure.
        self.log_path = os.path.join(tempfile.gettempdir(), f"effnet-skipped-{uuid.uuid4().hex}.tsv")
        weakref.finalize(self, _remove_quietly, self.log_path, os.getpid())

    def __getstate__(self) -> dict[str, Any]:
        # A worker's copy must not delete the shared log when it is garbage-collected.
        return {"up_front": self.up_front, "log_path": self.log_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.up_front = state["up_front"]
        self.log_path = state["log_path"]

    def record(self, path: str, reason: str) -> None:
        """Record a load-time failure (from any process) and warn with the file's name."""
        skipped = SkippedFile(str(path), " ".join(reason.split()))  # one line, no tabs
        line = f"{skipped.path}\t{skipped.reason}\n".encode()
        descriptor = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)
        warn_skipped(skipped)

    def read(self) -> list[SkippedFile]:
        """Every skipped file once, up-front ones first, then load-time ones in the order seen."""
        seen: dict[str, SkippedFile] = {item.path: item for item in self.up_front}
        log = Path(self.log_path)
        if log.is_file():
            for line in log.read_text(errors="replace").splitlines():
                path, _, reason = line.partition("\t")
                seen.setdefault(path, SkippedFile(path, reason))
        return list(seen.values())
