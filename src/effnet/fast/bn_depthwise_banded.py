"""The training depthwise conv on tensor cores, pass by pass, for the layers where a sweep finds it faster.

`effnet.fast.banded` computes a depthwise conv as k banded matrix products per kernel row, batched over channels
(about a quarter to a half of the Triton tap kernel's instructions per output, compiled for sm_90). Two of
`bn_depthwise`'s passes take it here, in the shape of their cuDNN forms (`bn_depthwise_cudnn`), whose
element-wise passes they share:

- `forward`: the banded conv of the activation a, then its output's statistics in one pass;
- `input_grad` (stride 1): the gradient reaching a is the conv of g (the gradient reaching the raw output) by the
  kernel turned half a turn, padded k - 1 - p before: a banded conv too; then one pass for the SiLU's and bn1's
  derivatives with dscale and dshift.

The weight gradient keeps its Triton kernel or cuDNN's form. A tuning entry with kernel `banded` (no tiles: the
banded kernel's defaults) for `bn_depthwise`, or `bn_depthwise_input_grad` at stride 1, picks the form per layer
shape (`benchmarks/bn_depthwise_sweep.py` times it as "fwd banded" and "dx banded"). Any padding: the banded
kernel masks what lies outside the map, as the Triton kernels do. The banded tables are made from the taps at
every call (the weights change every step): about k C 32² values a layer.
"""
from __future__ import annotations

import torch

from effnet.fast import banded
from effnet.fast.bn_depthwise_cudnn import activation_backward, statistics


def forward(a: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
            output_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): the banded depthwise conv of a (the activation, channels-last) by the (k * k, C) taps
    (padding top and left `padding`, the output `output_size`), then y's float32 batch mean and biased
    variance in one pass (`bn_depthwise_cudnn.statistics`)."""
    y, _ = banded.banded_depthwise(a, taps, None, kernel_size=kernel_size, stride=stride, padding=padding,
                                   output_size=output_size, act=False, pool=False)
    return y, *statistics(y)


def input_grad(g: torch.Tensor, taps: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None,
               shift: torch.Tensor | None, kernel_size: int, padding: tuple[int, int],
               act: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dscale, dshift) of a stride-1 conv, the last two empty without scale: da, the banded conv of g by the
    turned taps, then dx = da * act'(z) * scale with z = x * scale + shift, dscale and dshift in one pass."""
    k = kernel_size
    da, _ = banded.banded_depthwise(g.to(x.dtype), taps.flip(0), None, kernel_size=k, stride=1,
                                    padding=(k - 1 - padding[0], k - 1 - padding[1]), output_size=tuple(x.shape[2:]),
                                    act=False, pool=False)
    return activation_backward(da, x, scale, shift, act)
