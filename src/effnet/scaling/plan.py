"""Resolve a spec into a concrete plan: every block's channels, stride, skip and drop-path rate.

This is the one stateless place that owns the cross-cutting logic (the stride on the first block
of a stage, the stochastic-depth schedule, the feature taps); the torch builder and the cost model
both read the plan, so they cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

from effnet.errors import SpecError
from effnet.scaling.rules import round_channels, round_repeats
from effnet.spec.types import NetworkSpec, StageSpec


# Each block kind's shortcut (where the block keeps its shape, where it does not): MBConv adds
# its input only where shapes allow, MobileNetV1 has no residuals, ResNet projects the input
# with a strided 1x1 conv + BN wherever the shape changes.
SHORTCUTS: dict[str, tuple[str, str]] = {
    "mbconv": ("identity", "none"),
    "dsconv": ("none", "none"),
    "bottleneck": ("identity", "projection"),
}


@dataclass(frozen=True)
class BlockPlan:
    in_channels: int
    out_channels: int
    # The kxk convolution's width: mbconv after the 1x1 expansion (in_channels when expand_ratio
    # is 1), bottleneck after the 1x1 reduction, dsconv in_channels.
    mid_channels: int
    se_channels: int  # squeeze width, from the block input; 0 means no squeeze-excitation
    kernel_size: int
    stride: int
    drop_path_rate: float
    block: str  # the StageSpec's block kind
    shortcut: str  # "identity", "projection" (1x1 conv + BN) or "none"

    @property
    def has_skip(self) -> bool:
        """Identity shortcut (and so stochastic depth) only where shapes are unchanged."""
        return self.shortcut == "identity"

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
    head_channels: int  # 0: no head convolution
    resolution: int
    stem_pool: str = "none"

    @property
    def blocks(self) -> tuple[BlockPlan, ...]:
        return tuple(block for stage in self.stages for block in stage)

    @property
    def stem_reduction(self) -> int:
        """The stem's output stride: its convolution's, times 2 for a max pool."""
        return self.stem_stride * (2 if self.stem_pool == "max" else 1)

    @property
    def num_features(self) -> int:
        """Channels the classifier reads: the head convolution's, or the last stage's without one."""
        return self.head_channels or self.stages[-1][-1].out_channels

    @property
    def feature_taps(self) -> tuple[FeatureTap, ...]:
        """The last stage at each output stride (timm's `features_only` taps)."""
        taps, stride = [], self.stem_reduction
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


def _mid_channels(stage: StageSpec, in_channels: int, out_channels: int, divisor: int) -> int:
    """Width of the block's kxk convolution (see `StageSpec.expand_ratio`)."""
    if stage.block == "bottleneck":
        return round_channels(out_channels / stage.expand_ratio, divisor)
    if stage.expand_ratio == 1:
        return in_channels
    return round_channels(in_channels * stage.expand_ratio, divisor)


def resolve(spec: NetworkSpec) -> NetworkPlan:
    """The concrete network `spec` describes. Raises SpecError naming the field that breaks."""
    policy = spec.scaling
    divisor = policy.channel_divisor
    stem = (_scaled_channels(spec.stem.out_channels, spec.width, divisor, "stem.out_channels")
            if policy.scale_stem else spec.stem.out_channels)
    head = spec.head.out_channels
    if policy.scale_head and head > 0:
        head = _scaled_channels(head, spec.width, divisor, "head.out_channels")
        head = head if policy.shrink_head else max(head, spec.head.out_channels)

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
            stride = stage.stride if repeat == 0 else 1
            same_shape = stride == 1 and in_channels == out_channels
            blocks.append(BlockPlan(
                in_channels=in_channels,
                out_channels=out_channels,
                mid_channels=_mid_channels(stage, in_channels, out_channels, divisor),
                se_channels=max(1, int(in_channels * stage.se_ratio)) if stage.se_ratio > 0 else 0,
                kernel_size=stage.kernel_size,
                stride=stride,
                drop_path_rate=spec.drop_path_rate * block_index / total,
                block=stage.block,
                shortcut=SHORTCUTS[stage.block][0 if same_shape else 1],
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
        stem_pool=spec.stem.pool,
    )
