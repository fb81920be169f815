"""Small layers: convolutions with symmetric or TensorFlow "same" padding, squeeze-excitation."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

class SiLU(nn.SiLU):
    """`nn.SiLU` that works in place only without autograd. With autograd on, an in-place SiLU makes PyTorch copy
    its input for the backward (SiLU's derivative needs it): one more read and write of the whole activation,
    and no memory saved. So training takes the out-of-place SiLU, evaluation the in-place one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=self.inplace and not torch.is_grad_enabled())


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": lambda: SiLU(inplace=True),  # ReLU and ReLU6 differentiate their output: in place either way
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}


def make_activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding, computed from each input's own height and width.

    TF pads `max((ceil(n / s) - 1) * s + k - n, 0)` in total, the extra pixel at the bottom/right,
    so odd and non-square inputs match ported TF weights exactly.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = self._pad(x.shape[-2], 0)
        pad_w = self._pad(x.shape[-1], 1)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)

    def _pad(self, size: int, axis: int) -> int:
        stride, kernel = self.stride[axis], self.kernel_size[axis]
        # ceil(size / stride) without negative operands: ONNX integer division truncates toward
        # zero, so the `-(-size // stride)` idiom would export wrongly for odd sizes.
        pad = ((size + stride - 1) // stride - 1) * stride + kernel - size
        # pad >= kernel - stride, so the clamp only acts when kernel < stride. Skipping it otherwise
        # keeps a symbolic size (torch.export, ONNX) plain arithmetic, with no max to guard on.
        return pad if kernel >= stride else max(pad, 0)


def make_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              groups: int = 1, padding: str = "symmetric", bias: bool = False) -> nn.Conv2d:
    """A convolution whose output is `ceil(input / stride)` for either padding convention.

    "same" only differs from symmetric `k // 2` padding when striding, so stride-1 layers use
    the plain (faster) static convolution in both conventions.
    """
    if padding == "same" and stride > 1:
        return SameConv2d(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> 1x1 reduce -> activation -> 1x1 expand -> sigmoid.

    With `inplace=True` the gating multiply overwrites the input when autograd is off (eval,
    `no_grad`, `inference_mode`), saving one full-size activation per call; only for callers that
    never reuse the input. With autograd on it is always out of place (the backward needs `x`).
    """

    def __init__(self, channels: int, reduced_channels: int, activation: str, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = make_activation(activation)
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        scale = self.conv_reduce(scale)
        scale = self.act(scale)
        scale = self.conv_expand(scale)
        scale = self.gate(scale)
        if self.inplace and not torch.is_grad_enabled():
            return x.mul_(scale)  # (N, C, H, W)
        return x * scale
