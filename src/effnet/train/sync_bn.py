"""Batch norm with statistics over all ranks, for any backend (torch's SyncBatchNorm is GPU-only).

Used for `--sync-bn` on the CPU (gloo): the per-channel sum, sum of squares and count are summed
over ranks by an all-reduce whose backward is an all-reduce too, so the gradient flows through
the global statistics exactly as in one process with the whole batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; the gradient of every rank's x is the sum of all ranks' dy."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd signature
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        channels = x.shape[1]
        local = torch.cat([
            x.sum(dim=(0, 2, 3)),
            (x * x).sum(dim=(0, 2, 3)),
            x.new_full((1,), x.numel() / channels),
        ])  # (2C + 1,)
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        variance = total[channels:2 * channels] / count - mean * mean  # biased, as BN normalises
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(variance.detach() * count / (count - 1), momentum)
        scale = self.weight * torch.rsqrt(variance + self.eps)  # (C,)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` (in place) by GlobalBatchNorm2d with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            convert_global_batchnorm(child)
    return module
