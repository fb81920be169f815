"""Process-group set-up for torchrun (DDP: NCCL on GPU, gloo on CPU) and metric reduction."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from effnet.devices import resolve_device
from effnet.errors import DeviceError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device of this process: a plain `cuda` is the GPU of its local rank. Under torchrun a named GPU
    (`cuda:1`) would put every process on it: refused."""
    if world_size > 1 and preference.startswith("cuda:"):
        raise DeviceError(f"device {preference!r}: with torchrun each process trains on the GPU of its local "
                          "rank; use --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs")
    return resolve_device(preference, local_rank=local_rank)


def init_distributed(device_preference: str) -> DistContext:
    """Join the torchrun process group when launched by torchrun with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank, world_size)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, device)


def all_reduce_sum(values: list[float], context: DistContext) -> list[float]:
    """Sum numbers over all ranks (identity in a single process)."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_tensor(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum a tensor over all ranks (returned on the CPU; identity in a single process)."""
    if not context.distributed:
        return tensor
    reduced = tensor.to(context.device)
    dist.all_reduce(reduced)
    return reduced.cpu()


def cleanup(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
