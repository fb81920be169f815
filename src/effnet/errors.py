"""Typed errors for user mistakes. The CLI turns these into one clear line, no traceback."""
from __future__ import annotations


class EffnetError(Exception):
    """Base class for every error effnet raises about what the user asked for."""


class SpecError(EffnetError, ValueError):
    """An architecture spec, or a scaling of it, is invalid; the message names the field."""


class UnknownModelError(EffnetError, KeyError):
    """A model name that is not registered; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(EffnetError, ValueError):
    """A weights file or state dict that does not fit the model, or cannot be read safely."""


class DownloadError(WeightsError):
    """Published weights not in the cache that cannot be fetched (offline, no network) or that fail
    verification; the message names the URL to fetch and the exact path to save it at."""


class DeviceError(EffnetError, ValueError):
    """A device that is not there (CUDA on a machine without it, an index past the last GPU) or not a device."""


class EffnetWarning(UserWarning):
    """Base of effnet's warnings (a skipped file, a tuning file from another GPU); the CLI prints each as one
    `warning: ...` line."""
