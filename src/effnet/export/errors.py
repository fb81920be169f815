"""Typed export errors: the CLI prints them as one line, callers catch them by type."""
from __future__ import annotations

from effnet.errors import EffnetError


class ExportError(EffnetError, ValueError):
    """An export request that cannot be served: unknown format, bad option, missing package."""


class ParityError(ExportError):
    """The exported file computes something else than the eager model (above the tolerance)."""
