"""Which device a command runs on: `auto`, `cpu`, `cuda` or `cuda:N`, checked before anything is built."""
from __future__ import annotations

import torch

from effnet.errors import DeviceError

CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device, *, local_rank: int | None = None) -> torch.device:
    """The torch.device for `device`; `auto` is the GPU where there is one. A missing CUDA device, an index past
    the last one or another name is a DeviceError; a torch.device of another type (`mps`, say) is taken as
    given. `local_rank` picks a plain `cuda`'s index (one GPU per process under torchrun)."""
    if isinstance(device, torch.device) and device.type not in ("cpu", "cuda"):
        return device
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"device must be {CHOICES}, got {str(device)!r}")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device must be {CHOICES}, got {str(device)!r}") from None
    if resolved.type == "cpu":
        return resolved
    if not torch.cuda.is_available():
        raise DeviceError(f"device {str(device)!r}: no CUDA device is available here; use cpu")
    index = resolved.index if resolved.index is not None else local_rank
    if index is not None and index >= torch.cuda.device_count():
        raise DeviceError(f"device {str(device)!r}: there is no cuda:{index} here "
                          f"({torch.cuda.device_count()} CUDA device(s))")
    return torch.device("cuda", index) if index is not None else resolved
