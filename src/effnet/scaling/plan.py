"""Resolve a spec into a concrete plan: every block's channels, stride, skip and drop-path rate.

This is the one stateless place that owns the cross-cutting logic (the stride on the first block
of a stage, the stochastic-depth schedule, the feature taps); the torch builder and the cost model
both read the plan, so they cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

from effnet.errors import SpecError
from effnet.scaling.rules import round_channels, round_repeats
from effnet.spec.types import NetworkSpec


@dataclass(frozen=True)
class BlockPlan:
    in_channels: int
    out_channels: int
    mid_channels: int  # after the 1x1 expansion; equals in_channels when expand_ratio == 1
    se_channels: int  # squeeze width, from the block input; 0 means no squeeze-excitation
    kernel_size: int
    stride: int
    drop_path_rate: float

    @property
    def has_skip(self) -> bool:
        """Identity shortcut (and so stochastic depth) only where shapes are unchanged."""
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def expands(self) -> bool:
        return self.mid_channels != self.in_channels


@dataclass(frozen=True)
class FeatureTap:
    """A multi-scale output: after `stage`, `channels` maps at `stride` of the input."""

    stage: int
    channels: int
    stride: int


@dataclass(frozen=True)
class NetworkPlan:
    stem_channels: int
    stem_kernel_size: int
    stem_stride: int
    stages: tuple[tuple[BlockPlan, ...], ...]
    head_channels: int
    resolution: int

    @property
    def blocks(self) -> tuple[BlockPlan, ...]:
        return tuple(block for stage in self.stages for block in stage)

    @property
    def feature_taps(self) -> tuple[FeatureTap, ...]:
        """The last stage at each output stride (timm's `features_only` taps)."""
        taps, stride = [], self.stem_stride
        for index, stage in enumerate(self.stages):
            stride *= stage[0].stride
            following = self.stages[index + 1][0].stride if index + 1 < len(self.stages) else 2
            if following == 2:
                taps.append(FeatureTap(index, stage[-1].out_channels, stride))
        return tuple(taps)


def _scaled_channels(channels: int, multiplier: float, divisor: int, where: str) -> int:
    raw = channels * multiplier
    if raw < 1:
        raise SpecError(
            f"{where}: width {multiplier:.4g} scales {channels} channels to {raw:.3g}, "
            "less than one channel; use a larger width or phi"
        )
    return round_channels(raw, divisor)


def resolve(spec: NetworkSpec) -> NetworkPlan:
    """The concrete network `spec` describes. Raises SpecError naming the field that breaks."""
    policy = spec.scaling
    divisor = policy.channel_divisor
    stem = (_scaled_channels(spec.stem.out_channels, spec.width, divisor, "stem.out_channels")
            if policy.scale_stem else spec.stem.out_channels)
    head = (_scaled_channels(spec.head.out_channels, spec.width, divisor, "head.out_channels")
            if policy.scale_head else spec.head.out_channels)

    last = len(spec.stages) - 1
    shapes = []  # (stage, out_channels, repeats)
    for index, stage in enumerate(spec.stages):
        where = f"stages[{index}].out_channels"
        out_channels = _scaled_channels(stage.out_channels, spec.width, divisor, where)
        fixed = policy.fix_first_last_depth and index in (0, last)
        repeats = stage.repeats if fixed else round_repeats(stage.repeats, spec.depth)
        shapes.append((stage, out_channels, repeats))

    total = sum(repeats for _, _, repeats in shapes)
    stages, in_channels, block_index = [], stem, 0
    for stage, out_channels, repeats in shapes:
        blocks = []
        for repeat in range(repeats):
            mid = round_channels(in_channels * stage.expand_ratio, divisor) if stage.expand_ratio != 1 else in_channels
            blocks.append(BlockPlan(
                in_channels=in_channels,
                out_channels=out_channels,
                mid_channels=mid,
                se_channels=max(1, int(in_channels * stage.se_ratio)) if stage.se_ratio > 0 else 0,
                kernel_size=stage.kernel_size,
                stride=stage.stride if repeat == 0 else 1,
                drop_path_rate=spec.drop_path_rate * block_index / total,
            ))
            in_channels = out_channels
            block_index += 1
        stages.append(tuple(blocks))
    return NetworkPlan(
        stem_channels=stem,
        stem_kernel_size=spec.stem.kernel_size,
        stem_stride=spec.stem.stride,
        stages=tuple(stages),
        head_channels=head,
        resolution=spec.resolution,
    )
