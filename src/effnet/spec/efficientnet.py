"""EfficientNet's base network (B0) and its family rows, as data.

Sources: the paper (Tan & Le, ICML 2019), Table 1, and the official TensorFlow code
(`efficientnet_builder.efficientnet_params`, `lite/efficientnet_lite_builder.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from effnet.spec.types import HeadSpec, NetworkSpec, ScalingPolicy, StageSpec, StemSpec

# EfficientNet-B0 (Table 1; strides as in the official code and every released checkpoint).
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(out_channels=16, repeats=1, kernel_size=3, stride=1, expand_ratio=1),
    StageSpec(out_channels=24, repeats=2, kernel_size=3, stride=2, expand_ratio=6),
    StageSpec(out_channels=40, repeats=2, kernel_size=5, stride=2, expand_ratio=6),
    StageSpec(out_channels=80, repeats=3, kernel_size=3, stride=2, expand_ratio=6),
    StageSpec(out_channels=112, repeats=3, kernel_size=5, stride=1, expand_ratio=6),
    StageSpec(out_channels=192, repeats=4, kernel_size=5, stride=2, expand_ratio=6),
    StageSpec(out_channels=320, repeats=1, kernel_size=3, stride=1, expand_ratio=6),
)

EFFICIENTNET_B0 = NetworkSpec(
    name="efficientnet_b0",
    stem=StemSpec(out_channels=32, kernel_size=3, stride=2),
    stages=B0_STAGES,
    head=HeadSpec(out_channels=1280, dropout=0.2),
)

# Lite: ReLU6, no squeeze-excitation, stem and head not scaled, first and last stage depth fixed.
EFFICIENTNET_LITE0 = replace(
    EFFICIENTNET_B0,
    name="efficientnet_lite0",
    stages=tuple(replace(stage, se_ratio=0.0) for stage in B0_STAGES),
    activation="relu6",
    scaling=ScalingPolicy(scale_stem=False, scale_head=False, fix_first_last_depth=True),
)


@dataclass(frozen=True)
class FamilyRow:
    """One official variant: (width, depth, resolution, dropout) applied to a base."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


# efficientnet_builder.efficientnet_params (B8 and L2 from the Noisy Student release).
EFFICIENTNET_ROWS: tuple[FamilyRow, ...] = (
    FamilyRow("b0", 1.0, 1.0, 224, 0.2),
    FamilyRow("b1", 1.0, 1.1, 240, 0.2),
    FamilyRow("b2", 1.1, 1.2, 260, 0.3),
    FamilyRow("b3", 1.2, 1.4, 300, 0.3),
    FamilyRow("b4", 1.4, 1.8, 380, 0.4),
    FamilyRow("b5", 1.6, 2.2, 456, 0.4),
    FamilyRow("b6", 1.8, 2.6, 528, 0.5),
    FamilyRow("b7", 2.0, 3.1, 600, 0.5),
    FamilyRow("b8", 2.2, 3.6, 672, 0.5),
    FamilyRow("l2", 4.3, 5.3, 800, 0.5),
)

# lite/efficientnet_lite_builder.efficientnet_lite_params
LITE_ROWS: tuple[FamilyRow, ...] = (
    FamilyRow("lite0", 1.0, 1.0, 224, 0.2),
    FamilyRow("lite1", 1.0, 1.1, 240, 0.2),
    FamilyRow("lite2", 1.1, 1.2, 260, 0.3),
    FamilyRow("lite3", 1.2, 1.4, 280, 0.3),
    FamilyRow("lite4", 1.4, 1.8, 300, 0.3),
)

# TensorFlow numerics for the `tf_` twins: "same" padding, BN eps 1e-3 and momentum 0.99 (TF).
TF_NUMERICS = dict(padding="same", bn_eps=1e-3, bn_momentum=0.01)


def apply_row(base: NetworkSpec, row: FamilyRow, name: str) -> NetworkSpec:
    """The base network with a family row's multipliers, resolution and dropout."""
    return replace(
        base,
        name=name,
        width=row.width,
        depth=row.depth,
        resolution=row.resolution,
        head=replace(base.head, dropout=row.dropout),
    )
