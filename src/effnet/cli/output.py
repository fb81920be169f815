"""Printing helpers shared by commands: aligned tables, one JSON document on stdout, output files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from effnet.errors import EffnetError
from effnet.folders import folder_problem


def check_writable(path: Path, option: str) -> None:
    """Make `path`'s folder and fail now, in one line, if the file cannot be written there: before a command
    spends minutes on what it would write. (It opens the file to know: permission bits do not tell root.)"""
    problem = folder_problem(path.parent)
    if problem:
        raise EffnetError(f"{option} {path}: {problem}")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as error:
        raise EffnetError(f"{option} {path}: cannot write it ({error.strerror or error})") from None
    if not existed:
        path.unlink()


def check_writable_folder(path: Path, option: str) -> None:
    """Make the folder `path` and fail now, in one line, if files cannot be written in it."""
    problem = folder_problem(path)
    if problem:
        raise EffnetError(f"{option} {path}: {problem}")
    probe = path / ".effnet-write-check"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise EffnetError(f"{option} {path}: cannot write in the folder ({error.strerror or error})") from None


def write_text(path: Path, text: str, option: str) -> None:
    """`path.write_text(text)` after `check_writable`; a failure is still one line naming the option."""
    try:
        path.write_text(text)
    except OSError as error:
        raise EffnetError(f"{option} {path}: {error.strerror or error}") from None


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def millions(value: int) -> str:
    return f"{value / 1e6:.2f}M"


def billions(value: int) -> str:
    return f"{value / 1e9:.3f}G"
