"""MBConv training with the 1x1 convolutions' batch norms fused into them (experimental, opt-in).

`use_fused_training(model)` switches every MBConv block of a model (in place) to
`FusedTrainingMBConv`, which keeps the block's parameters, buffers and state-dict keys and, in a
training forward with autograd on, computes the same function with `effnet.fast.bn_pointwise` for
both 1x1 convolutions:

- the expansion writes its raw output with that output's per-channel sums (so `bn1`'s statistics
  cost no extra read); the normalisation and SiLU are one PyTorch element-wise step before the
  depthwise conv;
- the depthwise conv stays PyTorch's (cuDNN); its output's statistics and the squeeze-excitation's
  pool are PyTorch reductions over the raw output;
- the projection takes that raw output and applies `bn2`, the SiLU and the SE gate as it loads it, so
  the widest activation after the depthwise conv is neither written nor read back (nor its gradient,
  in the backward), and gathers `bn3`'s statistics in its epilogue.

Each batch norm's running statistics are updated once per forward as `nn.BatchNorm2d` updates them
(momentum, unbiased variance). Evaluation, `no_grad` and inputs the kernels do not take (not
channels-last, float64, no GPU and no TRITON_INTERPRET) run the block's own forward. A fused
depthwise pass (its input's batch norm applied as it loads, its own statistics in the epilogue) is
the next step; until it exists the depthwise side runs as PyTorch does. Not yet timed on a GPU:
`effnet bench --fused-training` adds the `effnet-ftrain` training row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effnet.fast import bn_pointwise as bnp
from effnet.models.blocks import MBConv


def _statistics(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
                count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bn's (scale, shift) for a batch of `count` values per channel with this mean and biased
    variance, and its running statistics updated as nn.BatchNorm2d updates them in training."""
    scale, shift = bnp.batch_norm_affine(mean, var, bn.weight, bn.bias, bn.eps)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((var * count / max(count - 1, 1)).to(bn.running_var.dtype), momentum)
    return scale, shift


def _normalize(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """y * scale + shift per channel, in y's dtype."""
    return (y * scale[None, :, None, None] + shift[None, :, None, None]).to(y.dtype)


class FusedTrainingMBConv(MBConv):
    """An MBConv whose training forward runs its 1x1 convs with the batch norms fused into them
    (module docstring). Made from an MBConv by `use_fused_training`; the same parameters and keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fused(x):
            return super().forward(x)
        if torch.is_autocast_enabled(x.device.type):  # as autocast runs the convolutions
            x = x.to(torch.get_autocast_dtype(x.device.type))
        shortcut = x
        count = x.shape[0] * x.shape[2] * x.shape[3]
        if self.expands:
            y1, mean, var = bnp.bn_pointwise(x, self.conv_pw.weight)
            scale, shift = _statistics(self.bn1, mean, var, count)
            x = F.silu(_normalize(y1, scale, shift))
        y2 = self.conv_dw(x).contiguous(memory_format=torch.channels_last)  # cuDNN keeps channels-last
        count = y2.shape[0] * y2.shape[2] * y2.shape[3]
        var, mean = torch.var_mean(y2.float(), dim=(0, 2, 3), correction=0)
        scale, shift = _statistics(self.bn2, mean, var, count)
        gate = None
        if self.has_se:
            pooled = F.silu(y2.float() * scale[None, :, None, None] + shift[None, :, None, None]).mean((2, 3))
            se = self.se
            hidden = se.act(F.linear(pooled, se.conv_reduce.weight.flatten(1), se.conv_reduce.bias))
            gate = torch.sigmoid(F.linear(hidden, se.conv_expand.weight.flatten(1), se.conv_expand.bias)).float()
        y3, mean, var = bnp.bn_pointwise(y2, self.conv_pwl.weight, scale, shift, gate, act=True)
        scale, shift = _statistics(self.bn3, mean, var, count)
        out = _normalize(y3, scale, shift)
        if self.has_skip:
            out = self.drop_path(out) + shortcut
        return out

    def _fused(self, x: torch.Tensor) -> bool:
        bns = (self.bn2, self.bn3, *([self.bn1] * self.expands))
        convs = (self.conv_pwl, *([self.conv_pw] * self.expands))
        return (self.training and torch.is_grad_enabled() and bnp.usable(x) and isinstance(self.act2, nn.SiLU)
                and (not self.expands or isinstance(self.act1, nn.SiLU))
                and all(type(bn) is nn.BatchNorm2d and bn.affine for bn in bns)
                and all(conv.bias is None and conv.kernel_size == (1, 1) and conv.stride == (1, 1) for conv in convs))


def use_fused_training(model: nn.Module) -> nn.Module:
    """Switch (in place) every MBConv of `model` to `FusedTrainingMBConv`; returns the model. Its
    parameters, buffers, state-dict keys and evaluation forward are unchanged."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"use_fused_training needs an nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if type(module) is MBConv:
            module.__class__ = FusedTrainingMBConv
    return model
