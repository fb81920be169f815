"""A training batch norm and SiLU after a library convolution (the stem's and the head's), in Triton passes.

The fused training MBConv gathers each batch norm's statistics in the epilogue of the conv before it; the stem
and head convs stay cuDNN's, and their batch norms were PyTorch's. On an H200 (benchmarks/RESULTS.md, run 8),
in an eager B0 step at batch 128, PyTorch's channels-last statistics kernel took 186 us a call on the stem and the
head (one read of the stem's 103 MB map in bf16 takes about 30) and its backward's element-wise kernel 230 us,
beside the SiLU's passes. Here, on the conv's output y:

- forward: y's float32 batch mean and biased variance in one pass (`bn_depthwise_cudnn.statistics`, merged as
  the fused convs merge theirs), the affine map and the running statistics (`bn_stats.batch_norm_train`), then
  act(y * scale + shift) in one more pass (`bn_depthwise._activate`); act(...) is not kept for the backward;
- backward: the SiLU's and the affine map's derivatives with dscale and dshift in one pass (`affine_grad`),
  then the gradient reaching y from the batch mean and variance added to that in one more
  (`bn_depthwise_cudnn.output_gradient`), which the conv's backward takes.

`batch_norm_act` runs it where the fused training's kernels run (channels-last y on a GPU or under
TRITON_INTERPRET, no graph being traced; `usable`) and `act(bn(y))` elsewhere: the same function, the running
statistics updated once either way, deterministic (no atomic adds).
"""
from __future__ import annotations

import torch
from torch import nn

from effnet.fast import bn_depthwise as bnd
from effnet.fast import bn_depthwise_cudnn as bdc
from effnet.fast import bn_stats, kernels
from effnet.fast.affine_grad import affine_grad


class _Statistics(torch.autograd.Function):
    """(y, mean, var): y's batch statistics in one pass; its backward adds the statistics' gradient to y's."""

    @staticmethod
    def forward(ctx, y):  # noqa: D102 - see the class
        mean, var = bdc.statistics(y)
        ctx.save_for_backward(y, mean)
        ctx.set_materialize_grads(False)
        return y.view_as(y), mean, var

    @staticmethod
    def backward(ctx, dy, dmean, dvar):  # noqa: D102 - see the class
        y, mean = ctx.saved_tensors
        dy = torch.zeros_like(y) if dy is None else dy.contiguous(memory_format=torch.channels_last)
        return bdc.output_gradient(dy, bn_stats.gradient_stats(dmean, dvar, mean, y), y)


class _AffineSiLU(torch.autograd.Function):
    """SiLU(y * scale + shift) in one pass; its backward one pass too (`affine_grad`), from y."""

    @staticmethod
    def forward(ctx, y, scale, shift):  # noqa: D102 - see the class
        ctx.save_for_backward(y, scale, shift)
        return bnd._activate(y, scale, shift, True)

    @staticmethod
    def backward(ctx, g):  # noqa: D102 - see the class
        y, scale, shift = ctx.saved_tensors
        dy, daffine = affine_grad(g.contiguous(memory_format=torch.channels_last), y, scale, shift, act=True)
        return dy, daffine[0], daffine[1]


def takes(bn: nn.BatchNorm2d, y: torch.Tensor) -> bool:
    """Whether `silu_batch_norm` takes this batch norm's training forward on y: affine, in training with a momentum,
    autograd on, y as the fused convs take it, and no graph being traced (Inductor fuses the plain layers
    itself)."""
    return (bn.affine and bn.training and bn.momentum is not None and torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and bnd.usable(y) and kernels.addressable(y.numel()))


def usable(bn: nn.Module, act: nn.Module, y: torch.Tensor) -> bool:
    """Whether `batch_norm_act` takes the Triton passes: a plain nn.BatchNorm2d that `takes` y, and a SiLU."""
    return type(bn) is nn.BatchNorm2d and isinstance(act, nn.SiLU) and takes(bn, y)


def silu_batch_norm(bn: nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
    """SiLU(bn(y)) in training, through the Triton passes (module docstring; the caller checks `takes`): only y is
    kept for the backward. Also the "activations" memory saver's forward on a GPU (`effnet.fast.memory`)."""
    y, mean, var = _Statistics.apply(y)
    scale, shift = bn_stats.batch_norm_train(bn, mean, var, y.numel() // y.shape[1])
    return _AffineSiLU.apply(y, scale, shift)


def batch_norm_act(bn: nn.BatchNorm2d, act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """act(bn(y)) for a conv's output y: through the Triton passes where `usable` (module docstring), else the
    layers themselves."""
    return silu_batch_norm(bn, y) if usable(bn, act, y) else act(bn(y))
