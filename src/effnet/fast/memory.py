"""Training memory savers: store less in the forward pass, recompute it in the backward pass.

- "activations": every BatchNorm + SiLU pair keeps only its input. Batch statistics are computed
  as usual (autograd keeps the input it already holds); the normalise-and-activate step, an
  element-wise pass, is recomputed in the backward instead of storing its two outputs. On a GPU (channels-last
  activations) the pair runs as the fused training's stem and head run theirs (`effnet.fast.bn_act`: two Triton
  passes each way, keeping only the input); elsewhere as PyTorch operators under `torch.utils.checkpoint`, which
  compute in float32 (run 9, an H200: B4 trained at 0.38x timm eager that way).
- "stages": each stage's activations are recomputed from the stage input (`torch.utils.checkpoint`).
- "both": the two together.

The model keeps its key names and computes the same function (forward and gradients); running
statistics are updated once per forward, as BatchNorm does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.fast import MEMORY_SAVERS
from effnet.models.network import _Trunk


def _normalize_silu(x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
    scale = (invstd * weight)[None, :, None, None]  # (1, C, 1, 1)
    shift = (bias - mean * invstd * weight)[None, :, None, None]
    return F.silu(x * scale + shift)


class RecomputedBatchNormSiLU(nn.BatchNorm2d):
    """BatchNorm2d followed by SiLU that stores only its input for the backward pass.

    A drop-in for a (`bn`, `act`) pair: it takes the BatchNorm's place (same state-dict keys) and
    the activation becomes `nn.Identity`. In eval mode it is plain BatchNorm + SiLU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return F.silu(super().forward(x))
        from effnet.fast import bn_act

        if bn_act.takes(self, x):
            return bn_act.silu_batch_norm(self, x)
        # Biased variance, as BN normalises with; autograd keeps only `x`, which is stored anyway.
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)  # (C,), (C,)
        with torch.no_grad():
            count = x.numel() // x.shape[1]
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
            unbiased = var.detach() * count / max(count - 1, 1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        invstd = torch.rsqrt(var + self.eps)
        return checkpoint(_normalize_silu, x, mean, invstd, self.weight, self.bias, use_reentrant=False)


def enable_memory_saving(model: nn.Module, mode: str = "activations") -> nn.Module:
    """Switch an effnet model (in place) to one of `MEMORY_SAVERS`; returns the model."""
    if mode not in MEMORY_SAVERS:
        raise ValueError(f"memory saver must be one of {', '.join(MEMORY_SAVERS)}, got {mode!r}")
    if not isinstance(model, _Trunk):
        raise ValueError(f"memory savers need an effnet model, got {type(model).__name__}")
    if mode in ("activations", "both"):
        for module in list(model.modules()):
            for bn_name, act_name in (("bn1", "act1"), ("bn2", "act2")):
                bn, act = getattr(module, bn_name, None), getattr(module, act_name, None)
                if type(bn) is nn.BatchNorm2d and isinstance(act, nn.SiLU):
                    setattr(module, bn_name, _recomputed(bn))
                    setattr(module, act_name, nn.Identity())
    model.set_grad_checkpointing(mode in ("stages", "both"))
    return model


def _recomputed(bn: nn.BatchNorm2d) -> RecomputedBatchNormSiLU:
    new = RecomputedBatchNormSiLU(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                  device=bn.weight.device, dtype=bn.weight.dtype)
    new.load_state_dict(bn.state_dict())
    new.train(bn.training)
    return new
