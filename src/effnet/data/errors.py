"""Typed errors and warnings of the data package.

Kept in their own module (not effnet/errors.py) so the data package owns its error vocabulary;
both errors are `EffnetError`s, so the CLI prints them as one line without a traceback.
"""
from __future__ import annotations

from effnet.errors import EffnetError, EffnetWarning


class DataError(EffnetError, ValueError):
    """A data folder or data set that cannot be used as asked: missing folder, empty class, bad split."""


class DatasetNotAvailableError(DataError):
    """A named data set whose files are neither on disk nor downloadable; the message says what to fetch and where."""


class ImageLoadError(DataError):
    """One image file that cannot be decoded safely; `reason` is the short, human-readable cause."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load image {path}: {reason}")
        self.path = path
        self.reason = reason


class SkippedFileWarning(EffnetWarning):
    """Emitted once per unusable file that a data set leaves out; the message names the file and why."""
