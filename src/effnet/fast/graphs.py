"""CUDA-graph capture of a fixed-shape inference forward: one launch replays every kernel.

EfficientNet-B0 runs ~250 small kernels per forward; at small batches the GPU waits on the CPU
launching them. A captured graph replays them with no per-kernel launch cost. The input shape,
dtype and device are fixed at capture; another shape is a clear error, not a silent recapture.
"""
from __future__ import annotations

import torch
from torch import nn


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
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup):  # lazy initialisation (cuDNN plans, Triton compiles) stays out of the graph
                model(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
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
