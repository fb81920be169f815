"""Other base networks in the same dataclass language, so compound scaling applies beyond
EfficientNet (the paper's Table 3 scales MobileNetV1, MobileNetV2 and ResNet-50).

Sources: MobileNetV1 (Howard et al., 2017, Table 1), MobileNetV2 (Sandler et al., 2018, Table 2,
as torchvision's `mobilenet_v2` builds it), ResNet-50 (He et al., 2016, Table 1, as torchvision's
`resnet50` builds it: "V1.5", the stride on the 3x3 convolution). None of them uses stochastic
depth, so `drop_path_rate` is 0; all use PyTorch's BatchNorm defaults (eps 1e-5, momentum 0.1).
"""
from __future__ import annotations

from effnet.spec.types import HeadSpec, NetworkSpec, ScalingPolicy, StageSpec, StemSpec


def _dsconv(out_channels: int, repeats: int, stride: int) -> StageSpec:
    return StageSpec(out_channels=out_channels, repeats=repeats, kernel_size=3, stride=stride,
                     expand_ratio=1, se_ratio=0.0, block="dsconv")


# Table 1's 13 depthwise-separable layers as stages (the paper's "s2" on the second-to-last
# layer is a typo: every implementation keeps 7x7 there). 4.2M parameters.
MOBILENET_V1 = NetworkSpec(
    name="mobilenet_v1",
    stem=StemSpec(out_channels=32, kernel_size=3, stride=2),
    stages=(
        _dsconv(64, 1, 1),
        _dsconv(128, 2, 2),
        _dsconv(256, 2, 2),
        _dsconv(512, 6, 2),
        _dsconv(1024, 2, 2),
    ),
    # No head convolution: the classifier reads the pooled 1024 channels. TF-slim's dropout
    # keeps 0.999 of the features.
    head=HeadSpec(out_channels=0, dropout=0.001),
    activation="relu",
    drop_path_rate=0.0,
)


def _inverted(expand_ratio: int, out_channels: int, repeats: int, stride: int) -> StageSpec:
    return StageSpec(out_channels=out_channels, repeats=repeats, kernel_size=3, stride=stride,
                     expand_ratio=expand_ratio, se_ratio=0.0, block="mbconv")


# Table 2 rows (t, c, n, s): MBConv without squeeze-excitation, ReLU6. Like torchvision, a width
# below 1 leaves the 1280-channel head as it is.
MOBILENET_V2 = NetworkSpec(
    name="mobilenet_v2",
    stem=StemSpec(out_channels=32, kernel_size=3, stride=2),
    stages=(
        _inverted(1, 16, 1, 1),
        _inverted(6, 24, 2, 2),
        _inverted(6, 32, 3, 2),
        _inverted(6, 64, 4, 2),
        _inverted(6, 96, 3, 1),
        _inverted(6, 160, 3, 2),
        _inverted(6, 320, 1, 1),
    ),
    head=HeadSpec(out_channels=1280, dropout=0.2),
    activation="relu6",
    drop_path_rate=0.0,
    scaling=ScalingPolicy(shrink_head=False),
)


def _bottleneck(out_channels: int, repeats: int, stride: int) -> StageSpec:
    return StageSpec(out_channels=out_channels, repeats=repeats, kernel_size=3, stride=stride,
                     expand_ratio=4, se_ratio=0.0, block="bottleneck")


# conv2_x .. conv5_x: 3, 4, 6, 3 bottlenecks (1x1 reduce, 3x3, 1x1 expand x4).
RESNET_50 = NetworkSpec(
    name="resnet50",
    stem=StemSpec(out_channels=64, kernel_size=7, stride=2, pool="max"),
    stages=(
        _bottleneck(256, 3, 1),
        _bottleneck(512, 4, 2),
        _bottleneck(1024, 6, 2),
        _bottleneck(2048, 3, 2),
    ),
    head=HeadSpec(out_channels=0, dropout=0.0),  # no head convolution, no dropout
    activation="relu",
    drop_path_rate=0.0,
)

# Registered as they are (one row each); `scale_by_phi` scales any of them.
CLASSIC_BASES: tuple[tuple[NetworkSpec, str], ...] = (
    (MOBILENET_V1, "MobileNetV1 (Howard et al., 2017): depthwise-separable convolutions, ReLU"),
    (MOBILENET_V2, "MobileNetV2 (Sandler et al., 2018): inverted residuals without SE, ReLU6; "
                   "torchvision's layout and numerics"),
    (RESNET_50, "ResNet-50 (He et al., 2016): bottleneck blocks, 7x7 stem with max pool; "
                "torchvision's V1.5 (stride on the 3x3)"),
)
