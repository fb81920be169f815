"""Frozen dataclasses that describe a network: stem, stages of blocks, head, and how it scales.

A `NetworkSpec` is a *base* architecture plus the multipliers applied to it. Concrete channel
counts and repeats are derived by `effnet.scaling.resolve`, so scaling composes without
compounding rounding errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ACTIVATIONS = ("silu", "relu", "relu6")
PADDINGS = ("symmetric", "same")
# mbconv: inverted residual (EfficientNet, MobileNetV2); dsconv: depthwise-separable conv
# (MobileNetV1); bottleneck: ResNet's 1x1 reduce, kxk, 1x1 expand with a shortcut on every block.
BLOCKS = ("mbconv", "dsconv", "bottleneck")
STEM_POOLS = ("none", "max")
# Far beyond any published member (L2: depth 5.3, width 4.3, 800 px), low enough that a typo such as
# phi 100 (depth 8e7) is an error line instead of hours and gigabytes spent resolving the network.
MAX_MULTIPLIER = 100.0
MAX_RESOLUTION = 16384


def _check(condition: bool, message: str) -> None:
    from effnet.errors import SpecError

    if not condition:
        raise SpecError(message)


@dataclass(frozen=True)
class StemSpec:
    """The first convolution (+ BN + activation), optionally followed by a pooling layer."""

    out_channels: int = 32
    kernel_size: int = 3
    stride: int = 2
    pool: str = "none"  # "max": ResNet's 3x3 stride-2 max pool (padding 1) after the activation

    def __post_init__(self) -> None:
        _check(self.out_channels > 0, f"out_channels must be positive, got {self.out_channels}")
        _check(self.kernel_size % 2 == 1, f"kernel_size must be odd, got {self.kernel_size}")
        _check(self.stride in (1, 2), f"stride must be 1 or 2, got {self.stride}")
        _check(self.pool in STEM_POOLS,
               f"pool must be one of {', '.join(STEM_POOLS)}, got {self.pool!r}")


@dataclass(frozen=True)
class StageSpec:
    """A run of identical blocks; only the first one strides and changes the channel count.

    `expand_ratio` is the block's thin-to-wide ratio, wherever its wide part sits: an mbconv widens
    its input (middle = input x ratio), a bottleneck widens its middle (middle = output / ratio,
    ResNet's "expansion 4"); a dsconv does not expand (ratio 1).
    """

    out_channels: int
    repeats: int
    kernel_size: int = 3
    stride: int = 1
    expand_ratio: float = 1.0
    se_ratio: float = 0.25  # of the block *input* channels; 0 disables squeeze-excitation
    block: str = "mbconv"

    def __post_init__(self) -> None:
        _check(self.out_channels > 0, f"out_channels must be positive, got {self.out_channels}")
        _check(self.repeats > 0, f"repeats must be positive, got {self.repeats}")
        _check(self.kernel_size % 2 == 1 and self.kernel_size > 0,
               f"kernel_size must be a positive odd number, got {self.kernel_size}")
        _check(self.stride in (1, 2), f"stride must be 1 or 2, got {self.stride}")
        _check(self.expand_ratio >= 1, f"expand_ratio must be >= 1, got {self.expand_ratio}")
        _check(0 <= self.se_ratio <= 1, f"se_ratio must be in [0, 1], got {self.se_ratio}")
        _check(self.block in BLOCKS, f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        _check(self.block == "mbconv" or self.se_ratio == 0,
               f"se_ratio applies only to mbconv blocks; a {self.block} stage needs se_ratio=0, "
               f"got {self.se_ratio}")
        _check(self.block != "dsconv" or self.expand_ratio == 1,
               f"a dsconv stage does not expand: expand_ratio must be 1, got {self.expand_ratio}")


@dataclass(frozen=True)
class HeadSpec:
    """1x1 convolution to `out_channels` (+ BN + activation), global pool, dropout, classifier.

    `out_channels=0` means no head convolution (ResNet, MobileNetV1): the classifier reads the
    pooled output of the last stage.
    """

    out_channels: int = 1280
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check(self.out_channels >= 0,
               f"out_channels must be positive (or 0: no head convolution), got {self.out_channels}")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ScalingPolicy:
    """Which parts follow the width and depth multipliers (EfficientNet-Lite fixes some)."""

    scale_stem: bool = True
    scale_head: bool = True
    shrink_head: bool = True  # False: a width below 1 leaves the head at its base size (MobileNetV2)
    fix_first_last_depth: bool = False
    channel_divisor: int = 8

    def __post_init__(self) -> None:
        _check(self.channel_divisor > 0,
               f"channel_divisor must be positive, got {self.channel_divisor}")


@dataclass(frozen=True)
class NetworkSpec:
    """A whole classifier: base architecture, multipliers, and numerics (padding, BN)."""

    name: str
    stages: tuple[StageSpec, ...]
    stem: StemSpec = field(default_factory=StemSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    width: float = 1.0  # channel multiplier applied to the base
    depth: float = 1.0  # repeat multiplier applied to the base
    resolution: int = 224  # training / evaluation input size
    activation: str = "silu"
    padding: str = "symmetric"  # "same": TensorFlow padding, for weights ported from TF
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # PyTorch convention: TF's 0.99 is 0.01 here
    drop_path_rate: float = 0.2
    scaling: ScalingPolicy = field(default_factory=ScalingPolicy)

    def __post_init__(self) -> None:
        _check(len(self.stages) > 0, "stages must not be empty")
        _check(self.width > 0, f"width must be positive, got {self.width}")
        _check(self.depth > 0, f"depth must be positive, got {self.depth}")
        _check(self.width <= MAX_MULTIPLIER, f"width must be at most {MAX_MULTIPLIER:g}, got {self.width:.4g}")
        _check(self.depth <= MAX_MULTIPLIER, f"depth must be at most {MAX_MULTIPLIER:g}, got {self.depth:.4g}")
        _check(self.resolution >= 8, f"resolution must be at least 8, got {self.resolution}")
        _check(self.resolution <= MAX_RESOLUTION,
               f"resolution must be at most {MAX_RESOLUTION}, got {self.resolution}")
        _check(self.activation in ACTIVATIONS,
               f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        _check(self.padding in PADDINGS,
               f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        _check(self.bn_eps > 0, f"bn_eps must be positive, got {self.bn_eps}")
        _check(0 <= self.bn_momentum <= 1, f"bn_momentum must be in [0, 1], got {self.bn_momentum}")
        _check(0 <= self.drop_path_rate < 1,
               f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
