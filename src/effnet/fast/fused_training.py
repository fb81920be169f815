"""MBConv training with every convolution's batch norms fused into it (experimental, opt-in).

`use_fused_training(model)` switches every MBConv block of a model (in place) to
`FusedTrainingMBConv`, which keeps the block's parameters, buffers and state-dict keys and, in a
training forward with autograd on, computes the same function with `effnet.fast.bn_pointwise` (both
1x1 convolutions) and `effnet.fast.bn_depthwise`:

- the expansion writes its raw output and gathers that output's batch statistics in its epilogue
  (`bn1`'s statistics cost no extra read);
- the depthwise pass applies `bn1` and the SiLU in one element-wise pass (kept for its weight
  gradient), convolves, and gathers `bn2`'s statistics in its epilogue; its backward applies the
  SiLU's and `bn1`'s derivatives as it writes the input gradient, so that gradient of the widest
  activation is never written before them;
- the squeeze-excitation and the projection are one operator (`effnet.fast.se_projection`): the pool
  reads the raw depthwise output once, and the projection applies `bn2`, the SiLU and the SE gate as it
  loads it, so the activation after the depthwise conv is neither written nor read back (nor its
  gradient, in the backward, where the pool's gradient joins the projection's input gradient in its
  epilogue), and gathers `bn3`'s statistics in its epilogue;
- `bn3`, stochastic depth and the residual are one pass over the narrow output, and one in the backward
  (`effnet.fast.block_output`).

The stem's and head's convs stay the library's; an EfficientNet classifier becomes a `FusedTrainingEfficientNet`,
whose batch norms and SiLUs after those convs take two Triton passes each way (`effnet.fast.bn_act`).

In bf16 and fp16 on a GPU, every SiLU's sigmoid (the forward's and the one its backward differentiates)
runs on the tanh instruction, 1/2 + tanh(z/2)/2, as the inference kernels' does (`kernels.fast_silu`:
one special-function instruction a value, not an exp and a division); float32 keeps the exact form.

Each batch norm's running statistics are updated once per forward as `nn.BatchNorm2d` updates them
(momentum, unbiased variance). Evaluation, `no_grad`, inputs the kernels do not take (not
channels-last, float64, no GPU and no TRITON_INTERPRET, a block's widest tensor past the kernels' 32-bit
offsets) and blocks with other layers (another activation, a biased or differently padded conv, an SE other
than EfficientNet's) run the block's own forward. The Triton kernels add no partial sum atomically; the library
forms (cuDNN's depthwise passes, by default the weight gradients and the 5 x 5 layers' passes, and the 1x1
products) are as deterministic as PyTorch's convolutions: bitwise under `torch.use_deterministic_algorithms`,
under which the fused training runs too. `effnet bench --fused-training` adds the `effnet-ftrain` training row.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from effnet.fast import bn_depthwise as bnd
from effnet.fast import bn_pointwise as bnp
from effnet.fast import bn_stats, kernels
from effnet.fast import ops
from effnet.fast.bn_act import batch_norm_act
from effnet.fast.block_output import block_output
from effnet.fast.se_projection import se_projection
from effnet.models.blocks import MBConv
from effnet.models.layers import SameConv2d
from effnet.models.network import EfficientNet


def _draws(drop_path: nn.Module) -> bool:
    """Whether `_stochastic_depth_draw` stands for `drop_path` (a block's nn.Identity or torchvision's
    StochasticDepth with a valid rate)."""
    return type(drop_path) is nn.Identity or (type(drop_path) is StochasticDepth and 0.0 <= drop_path.p <= 1.0
                                              and drop_path.mode in ("row", "batch"))


def _stochastic_depth_draw(drop_path: nn.Module, like: torch.Tensor) -> torch.Tensor | None:
    """StochasticDepth's factor per image (N,) for a batch shaped as `like`, drawn as torchvision draws it (the
    same random numbers, in like's dtype): 0 or 1 / survival. None for nn.Identity, evaluation or rate 0."""
    if type(drop_path) is nn.Identity or not drop_path.training or drop_path.p == 0.0:
        return None
    survival = 1.0 - drop_path.p
    draws = like.shape[0] if drop_path.mode == "row" else 1
    keep = torch.empty((draws,), dtype=like.dtype, device=like.device).bernoulli_(survival)
    if survival > 0.0:
        keep.div_(survival)
    return keep.expand(like.shape[0])


class FusedTrainingMBConv(MBConv):
    """An MBConv whose training forward runs every conv with its batch norms fused into it (module
    docstring). Made from an MBConv by `use_fused_training`; the same parameters and keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fused(x):
            return super().forward(x)
        if torch.is_autocast_enabled(x.device.type):  # as autocast runs the convolutions
            x = x.to(torch.get_autocast_dtype(x.device.type))
        shortcut = x
        count = x.shape[0] * x.shape[2] * x.shape[3]
        scale = shift = None
        if self.expands:
            x, mean, var = bnp.bn_pointwise(x, self.conv_pw.weight)  # raw: bn1 and its SiLU apply in the next pass
            scale, shift = bn_stats.batch_norm_train(self.bn1, mean, var, count)
        kernel_size, stride = self.conv_dw.kernel_size[0], self.conv_dw.stride[0]
        output_size, padding = ops.conv_geometry(x, kernel_size, stride, same=isinstance(self.conv_dw, SameConv2d))
        y2, mean, var = bnd.bn_depthwise(x, self.conv_dw.weight, scale, shift, stride=stride, padding=padding,
                                         output_size=output_size, act=True)
        count = y2.shape[0] * y2.shape[2] * y2.shape[3]
        scale, shift = bn_stats.batch_norm_train(self.bn2, mean, var, count)
        if self.has_se:
            se = self.se
            y3, mean, var = se_projection(y2, self.conv_pwl.weight, scale, shift, se.conv_reduce.weight,
                                          se.conv_reduce.bias, se.conv_expand.weight, se.conv_expand.bias)
        else:
            y3, mean, var = bnp.bn_pointwise(y2, self.conv_pwl.weight, scale, shift, act=True)
        scale, shift = bn_stats.batch_norm_train(self.bn3, mean, var, count)
        if not self.has_skip:
            return block_output(y3, scale, shift)
        if _draws(self.drop_path):
            return block_output(y3, scale, shift, _stochastic_depth_draw(self.drop_path, y3), shortcut)
        return self.drop_path(block_output(y3, scale, shift)) + shortcut  # a drop path of the caller's own

    def _fused(self, x: torch.Tensor) -> bool:
        bns = (self.bn2, self.bn3, *([self.bn1] * self.expands))
        convs = (self.conv_pwl, *([self.conv_pw] * self.expands))
        widest = x.numel() // x.shape[1] * self.conv_dw.in_channels if x.dim() == 4 else 0  # the expansion's output
        return (self.training and torch.is_grad_enabled() and bnp.usable(x) and kernels.addressable(x.numel(), widest)
                and isinstance(self.act2, nn.SiLU)
                and (not self.expands or isinstance(self.act1, nn.SiLU))
                and (not self.has_se or (isinstance(self.se.act, nn.SiLU) and isinstance(self.se.gate, nn.Sigmoid)))
                and all(type(bn) is nn.BatchNorm2d and bn.affine for bn in bns)
                and all(conv.bias is None and conv.kernel_size == (1, 1) and conv.stride == (1, 1) for conv in convs)
                and _plain_depthwise(self.conv_dw))


def _plain_depthwise(conv: nn.Module) -> bool:
    """A depthwise conv padded as `ops.conv_geometry` says (TF "same", or k // 2 on each side), square,
    without bias or dilation: what `bn_depthwise` computes."""
    k = conv.kernel_size[0]
    padding = (0, 0) if type(conv) is SameConv2d else (k // 2, k // 2)
    return (type(conv) in (nn.Conv2d, SameConv2d) and conv.groups == conv.in_channels == conv.out_channels
            and conv.kernel_size == (k, k) and conv.stride[0] == conv.stride[1] and conv.dilation == (1, 1)
            and conv.bias is None and conv.padding == padding and conv.padding_mode == "zeros")


class FusedTrainingEfficientNet(EfficientNet):
    """An EfficientNet whose stem and head batch norms and SiLUs train in Triton passes (`effnet.fast.bn_act`)
    where its fused blocks' kernels run. Made from an EfficientNet by `use_fused_training`; the same parameters
    and keys."""

    def _norm_act(self, bn: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return batch_norm_act(bn, act, x)


def use_fused_training(model: nn.Module) -> nn.Module:
    """Switch (in place) every MBConv of `model` to `FusedTrainingMBConv`, and an EfficientNet classifier to
    `FusedTrainingEfficientNet` (its stem's and head's batch norms and SiLUs); returns the model. Its
    parameters, buffers, state-dict keys and evaluation forward are unchanged."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"use_fused_training needs an nn.Module, got {type(model).__name__}")
    blocks = [module for module in model.modules() if isinstance(module, MBConv)]
    if not blocks:  # never a silent no-op: the caller would time or train the plain model thinking it fused
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise ValueError(f"use_fused_training switches effnet's MBConv blocks; {name} has none")
    for module in blocks:
        if type(module) is MBConv:
            module.__class__ = FusedTrainingMBConv
    if type(model) is EfficientNet:
        model.__class__ = FusedTrainingEfficientNet
    return model
