"""Printing helpers shared by commands: aligned tables and one JSON document on stdout."""
from __future__ import annotations

import json
from typing import Any, Sequence


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
