"""CUDA-graph capture of a fixed-shape inference forward, or of a whole training step: one launch replays
every kernel.

EfficientNet-B0 runs ~250 small kernels per forward; at small batches the GPU waits on the CPU
launching them. A captured graph replays them with no per-kernel launch cost. The input shape,
dtype and device are fixed at capture; another shape is a clear error, not a silent recapture.
A training step (forward, backward, optimizer step) is launch-bound at full batches too when its
batch norms are many small operators: run 6 measured an eager `effnet-ftrain` step of B0 at 180 ms
of wall time for 44 ms of kernels (batch 128, H100). `CudaGraphTrainingStep` captures one.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _warm_up(device: torch.device, run: Callable[[], object], times: int) -> None:
    """`run()` `times` times on a side stream before a capture, as PyTorch's graph capture asks: lazy
    initialisation (cuDNN plans, Triton compiles, an optimizer's state) stays out of the graph."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(times):
            run()
    torch.cuda.current_stream(device).wait_stream(side)


class CudaGraphModule(nn.Module):
    """Runs `model` by replaying a CUDA graph captured for inputs shaped like `example`.

    The returned tensor is a fresh copy (the graph's own output buffer is overwritten by the next
    replay) unless `copy_output=False`, for callers that consume it before calling again.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, warmup: int = 3, copy_output: bool = True) -> None:
        super().__init__()
        if not example.is_cuda:
            raise ValueError("CUDA graphs need a CUDA input; got a tensor on " + example.device.type)
        self.model = model
        self.copy_output = copy_output
        self.static_input = example.clone()
        with torch.inference_mode():
            _warm_up(example.device, lambda: model(self.static_input), warmup)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_output = model(self.static_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.static_input.shape or x.dtype != self.static_input.dtype:
            raise ValueError(f"this CUDA graph was captured for {tuple(self.static_input.shape)} "
                             f"{self.static_input.dtype}, got {tuple(x.shape)} {x.dtype}")
        self.static_input.copy_(x)
        self.graph.replay()
        return self.static_output.clone() if self.copy_output else self.static_output


class CudaGraphTrainingStep:
    """Replays a CUDA graph of `step()`: the forward, the backward and `optimizer.step()` on fixed input
    tensors (the caller copies each batch into them), as PyTorch's whole-network capture does. `step`
    returns the loss; calling this object replays the graph and returns that loss tensor (overwritten by
    the next replay). The gradients live in the graph's memory: each replay writes them afresh, so the
    step must not zero them (`optimizer.zero_grad` runs once here, before the capture). The step must not
    wait on the host: no `.item()`, no float16 loss scaling (`GradScaler` syncs), autocast with
    `cache_enabled=False` (its cached weight casts would not be replayed). `warmup` steps run first, on a
    side stream, so that lazy initialisation (cuDNN plans, Triton compiles, the optimizer's state) stays
    out of the graph; they are real steps, which update the weights."""

    def __init__(self, step: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, device: torch.device,
                 *, warmup: int = 3) -> None:
        if torch.device(device).type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; got {torch.device(device).type}")

        def zeroed_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            step()

        _warm_up(device, zeroed_step, warmup)
        optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in its pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = step()

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.loss
