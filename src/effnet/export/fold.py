"""Fold inference-mode BatchNorm into the convolution before it: one op fewer per pair.

`y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta` is a convolution with weights scaled per
output channel by `gamma / sqrt(var + eps)` and the bias `beta - mean * scale`. The folded model is
for inference only (the BN layers become `nn.Identity`, so it cannot be trained on), and its state
dict is not the public key format: it is an export fast path, not a weights format.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from effnet.export.errors import ExportError
from effnet.models.blocks import MBConv
from effnet.models.network import EfficientNet, _Trunk

# (convolution, the BatchNorm right after it) by role name, per module class that owns such pairs.
# Only effnet's own classes: other libraries reuse these names for other wirings (timm's
# depthwise-separable block runs conv_dw -> bn1 -> conv_pw -> bn2).
_PAIRS: tuple[tuple[type[nn.Module], tuple[tuple[str, str], ...]], ...] = (
    (_Trunk, (("conv_stem", "bn1"),)),
    (EfficientNet, (("conv_head", "bn2"),)),
    (MBConv, (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))),
)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Scale `conv`'s weights and set its bias so that `conv` alone computes `bn(conv(x))` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    folded_bias = (bias - bn.running_mean) * scale + bn.bias  # (out,)
    conv.bias = nn.Parameter(folded_bias.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with every conv -> BatchNorm pair folded into the conv.

    Pairs are found by role name (`conv_stem`/`bn1`, `conv_dw`/`bn2`, ...), the module's public key
    format; a BatchNorm that follows no convolution (or an `nn.Identity` part) is left alone. Only effnet
    models: anything else is an `ExportError`.
    The input model is not changed.
    """
    if not isinstance(model, _Trunk):
        raise ExportError(f"fold_batchnorm needs an effnet model, got {type(model).__name__}")
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        for owner, pairs in _PAIRS:
            if not isinstance(module, owner):
                continue
            for conv_name, bn_name in pairs:
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    fold_conv_bn(conv, bn)
                    setattr(module, bn_name, nn.Identity())
    return folded
