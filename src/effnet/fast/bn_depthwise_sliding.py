"""The training depthwise conv's forward and input gradient on the sliding window (`effnet.fast.depthwise_sliding`):
a tuning-file choice for stride-1 layers, as the cuDNN and banded forms are (`bn_depthwise_cudnn`,
`bn_depthwise_banded`), with the same element-wise passes around the conv.

The forward is the sliding conv of the activation a (no bias, no SiLU), then y's batch statistics in one pass
(`bn_depthwise_cudnn.statistics`). The input gradient is, at stride 1, the conv of g by the turned kernel padded
k - 1 - pad (the sliding kernel with its taps flipped), then dx = da * act'(z) * scale and dscale, dshift in one
pass (`bn_depthwise_cudnn.activation_backward`). Each pass reads or writes one tensor more than the fused Triton
kernel's (y read again; da written and read), which the sliding conv must earn back: on B0's 5 x 5 layers run 8
timed the tiled inference conv at 8.5-9.8x its memory floor. `benchmarks/bn_depthwise_sweep.py` times both ("fwd
sliding", "dx sliding") and records them where they win (tuning kernel `sliding` for `bn_depthwise` and
`bn_depthwise_input_grad`, no tiles: the sliding kernel's defaults).
"""
from __future__ import annotations

import torch

from effnet.fast.bn_depthwise_cudnn import activation_backward, statistics
from effnet.fast.depthwise_sliding import depthwise_sliding, misfit


def takes(kernel_size: int, stride: int) -> bool:
    """Whether the sliding kernel runs this conv: stride 1, kernels up to 5 x 5."""
    return misfit(kernel_size, stride, None) is None


def forward(a: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
            output_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): the sliding depthwise conv of a (the activation, channels-last) by the (k * k, C) taps, then
    y's float32 batch mean and biased variance in one pass."""
    y, _ = depthwise_sliding(a, taps, None, kernel_size=kernel_size, stride=stride, padding=padding,
                             output_size=output_size, act=False, pool=False)
    return y, *statistics(y)


def input_grad(g: torch.Tensor, taps: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None,
               shift: torch.Tensor | None, kernel_size: int, stride: int, padding: tuple[int, int],
               act: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, daffine), daffine (2, C) dscale and dshift, empty without scale: da, the gradient reaching the conv's
    input (the sliding conv of g by the turned taps), then dx = da * act'(z) * scale with z = x * scale + shift, and
    daffine in one pass."""
    k = kernel_size
    da, _ = depthwise_sliding(g.to(x.dtype), taps, None, kernel_size=k, stride=stride,
                              padding=(k - 1 - padding[0], k - 1 - padding[1]), output_size=tuple(x.shape[2:]),
                              act=False, pool=False, flip=True)
    return activation_backward(da, x, scale, shift, act)
