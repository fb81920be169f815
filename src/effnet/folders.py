"""Making an output's folder, with why it failed in words a one-line error can end with."""
from __future__ import annotations

from pathlib import Path

IN_THE_WAY = "a file stands where a folder of the path would be"


def folder_problem(folder: Path) -> str | None:
    """Make `folder` and its parents; None, or why they cannot be made (mkdir says "File exists" or "Not a
    directory" where a file is in the way)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return IN_THE_WAY
    except OSError as error:
        return f"cannot make the folder {folder} ({error.strerror or error})"
    return None
