"""One network class for every variant, built from a spec through its resolved plan."""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from effnet.models.blocks import BLOCK_TYPES
from effnet.models.layers import make_activation, make_conv
from effnet.scaling.plan import NetworkPlan, resolve
from effnet.spec.data import DataConfig, default_data_config
from effnet.errors import SpecError
from effnet.spec.types import NetworkSpec


@dataclass(frozen=True)
class FeatureInfo:
    """One multi-scale output of `features_only` models."""

    channels: int
    stride: int
    module: str


def _init_weights(module: nn.Module) -> None:
    """The official TF initialisation: conv normal(0, sqrt(2 / fan_out)), dense uniform(1/sqrt(out))."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.out_features)
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)


def _whole_number(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SpecError(f"{name} must be a whole number >= {least}, got {value!r}")


class _Trunk(nn.Module):
    """Stem and stages, shared by the classifier and the feature extractor."""

    def __init__(self, spec: NetworkSpec, plan: NetworkPlan, in_channels: int) -> None:
        super().__init__()
        _whole_number("in_chans", in_channels, 1)
        self.spec = spec
        self.conv_stem = make_conv(in_channels, plan.stem_channels, plan.stem_kernel_size,
                                   plan.stem_stride, padding=spec.padding)
        self.bn1 = nn.BatchNorm2d(plan.stem_channels, eps=spec.bn_eps, momentum=spec.bn_momentum)
        self.act1 = make_activation(spec.activation)
        # ResNet's stem pool (3x3, stride 2, padding 1); no parameters, so no keys either way.
        self.stem_pools = plan.stem_pool == "max"
        self.pool_stem = nn.MaxPool2d(3, 2, 1) if self.stem_pools else nn.Identity()
        self.blocks = nn.Sequential(*(
            nn.Sequential(*(BLOCK_TYPES[block.block](block, spec.activation, spec.padding, spec.bn_eps,
                                                     spec.bn_momentum)
                            for block in stage))
            for stage in plan.stages
        ))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_stem(x)  # (N, stem, H/2, W/2)
        x = self._norm_act(self.bn1, self.act1, x)
        if self.stem_pools:
            x = self.pool_stem(x)  # (N, stem, H/4, W/4)
        return x

    def _norm_act(self, bn: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The stem's and head's batch norm and activation after their conv: `act(bn(x))` (a fused training
        model takes them in Triton passes: `effnet.fast.fused_training`)."""
        return act(bn(x))

    def run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, x, use_reentrant=False,
                              context_fn=functools.partial(_recompute_contexts, stage))
        return stage(x)


def _recompute_contexts(stage: nn.Module) -> tuple[contextlib.AbstractContextManager,
                                                     contextlib.AbstractContextManager]:
    """(forward, recomputation) contexts: the backward's re-run of a stage leaves BN statistics as
    the forward left them (else each training step would update them twice)."""
    return contextlib.nullcontext(), _kept_batchnorm_statistics(stage)


@contextlib.contextmanager
def _kept_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    saved = [(buffer, buffer.clone()) for layer in module.modules()
             if isinstance(layer, nn.modules.batchnorm._BatchNorm) for buffer in layer.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class EfficientNet(_Trunk):
    """The classifier for every spec: stem, stages, 1x1 head, pool, dropout, linear classifier.

    Named for the family it was written for; MobileNet and ResNet specs build it too, the latter
    without a head convolution (`conv_head`, `bn2`, `act2` are `nn.Identity`).
    """

    def __init__(self, spec: NetworkSpec, num_classes: int = 1000, in_channels: int = 3,
                 data_config: DataConfig | None = None) -> None:
        _whole_number("num_classes", num_classes, 0)
        plan = resolve(spec)
        super().__init__(spec, plan, in_channels)
        self.plan = plan
        self.num_classes = num_classes
        self.num_features = plan.num_features
        self.data_config = data_config or default_data_config(spec.resolution, in_channels)
        self.has_head_conv = plan.head_channels > 0
        if self.has_head_conv:
            self.conv_head = make_conv(plan.stages[-1][-1].out_channels, plan.head_channels, 1,
                                       padding=spec.padding)
            self.bn2 = nn.BatchNorm2d(plan.head_channels, eps=spec.bn_eps, momentum=spec.bn_momentum)
            self.act2 = make_activation(spec.activation)
        else:
            self.conv_head, self.bn2, self.act2 = nn.Identity(), nn.Identity(), nn.Identity()
        self.dropout = nn.Dropout(spec.head.dropout) if spec.head.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for stage in self.blocks:
            x = self.run_stage(stage, x)
        if not self.has_head_conv:
            return x  # (N, features, H/32, W/32)
        x = self.conv_head(x)  # (N, features, H/32, W/32)
        return self._norm_act(self.bn2, self.act2, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # (N, features)
        if self.training:
            x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for `num_classes` (0: return pooled features)."""
        _whole_number("num_classes", num_classes, 0)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self.classifier)


class EfficientNetFeatures(_Trunk):
    """The trunk returning one feature map per output stride (2, 4, 8, 16, 32 for EfficientNet)."""

    def __init__(self, spec: NetworkSpec, in_channels: int = 3, out_indices: tuple[int, ...] | None = None,
                 data_config: DataConfig | None = None) -> None:
        plan = resolve(spec)
        super().__init__(spec, plan, in_channels)
        taps = plan.feature_taps
        out_indices = tuple(range(len(taps))) if out_indices is None else tuple(out_indices)
        for index in out_indices:
            if not -len(taps) <= index < len(taps):
                from effnet.errors import SpecError

                raise SpecError(f"out_indices: {index} is out of range for {len(taps)} feature levels")
        self.plan = plan
        self.data_config = data_config or default_data_config(spec.resolution, in_channels)
        self.taps = [taps[index] for index in out_indices]
        self.feature_info = [FeatureInfo(t.channels, t.stride, f"blocks.{t.stage}") for t in self.taps]
        # Stages after the last tap are not needed.
        del self.blocks[max(t.stage for t in self.taps) + 1:]
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = {tap.stage for tap in self.taps}
        features = []
        x = self.forward_stem(x)
        for index, stage in enumerate(self.blocks):
            x = self.run_stage(stage, x)
            if index in wanted:
                features.append(x)
        return features
