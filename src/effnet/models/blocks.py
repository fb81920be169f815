"""The blocks a stage can hold, each built from a `BlockPlan`: MBConv (EfficientNet, MobileNetV2),
depthwise-separable (MobileNetV1) and ResNet's bottleneck. `BLOCK_TYPES` maps a spec's block kind
to its class."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from effnet.models.layers import SqueezeExcite, make_activation, make_conv
from effnet.scaling.plan import BlockPlan


class MBConv(nn.Module):
    """1x1 expand -> kxk depthwise -> squeeze-excite -> 1x1 project (+ identity with drop path).

    MBConv1 (expand ratio 1) has no expansion: `conv_pw`, `bn1` and `act1` are `nn.Identity`.
    Key names follow timm's InvertedResidual, a public format shared with its checkpoints.
    """

    def __init__(self, plan: BlockPlan, activation: str, padding: str, bn_eps: float,
                 bn_momentum: float) -> None:
        super().__init__()
        mid = plan.mid_channels
        self.has_skip = plan.has_skip
        self.expands = plan.expands
        self.has_se = bool(plan.se_channels)
        if plan.expands:
            self.conv_pw = make_conv(plan.in_channels, mid, 1, padding=padding)
            self.bn1 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
            self.act1 = make_activation(activation)
        else:
            self.conv_pw, self.bn1, self.act1 = nn.Identity(), nn.Identity(), nn.Identity()
        self.conv_dw = make_conv(mid, mid, plan.kernel_size, plan.stride, groups=mid, padding=padding)
        self.bn2 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self.act2 = make_activation(activation)
        # The gate may overwrite its input: the block always hands it a fresh activation.
        self.se = SqueezeExcite(mid, plan.se_channels, activation, inplace=True) if self.has_se else nn.Identity()
        self.conv_pwl = make_conv(mid, plan.out_channels, 1, padding=padding)
        self.bn3 = nn.BatchNorm2d(plan.out_channels, eps=bn_eps, momentum=bn_momentum)
        rate = plan.drop_path_rate if self.has_skip else 0.0
        self.drop_path = StochasticDepth(rate, mode="row") if rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Absent parts (`nn.Identity`) and eval-mode drop path are skipped, not called: at batch 1
        # on CPU the Python cost of each module call is a visible share of the block's time.
        shortcut = x
        if self.expands:
            x = self.conv_pw(x)  # (N, mid, H, W)
            x = self.bn1(x)
            x = self.act1(x)
        x = self.conv_dw(x)  # (N, mid, H/s, W/s)
        x = self.bn2(x)
        x = self.act2(x)
        if self.has_se:
            x = self.se(x)
        x = self.conv_pwl(x)  # (N, out, H/s, W/s)
        x = self.bn3(x)
        if self.has_skip:
            if self.training:
                x = self.drop_path(x)
            # Without autograd the sum may overwrite bn3's fresh output: one allocation fewer.
            x = x + shortcut if torch.is_grad_enabled() else x.add_(shortcut)
        return x


class DepthwiseSeparable(nn.Module):
    """kxk depthwise -> BN -> act -> 1x1 pointwise -> BN -> act (MobileNetV1); no shortcut.

    Key names follow timm's DepthwiseSeparableConv (conv_dw, bn1, conv_pw, bn2).
    """

    def __init__(self, plan: BlockPlan, activation: str, padding: str, bn_eps: float,
                 bn_momentum: float) -> None:
        super().__init__()
        channels = plan.in_channels
        self.conv_dw = make_conv(channels, channels, plan.kernel_size, plan.stride, groups=channels,
                                 padding=padding)
        self.bn1 = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
        self.act1 = make_activation(activation)
        self.conv_pw = make_conv(channels, plan.out_channels, 1, padding=padding)
        self.bn2 = nn.BatchNorm2d(plan.out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act2 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_dw(x)  # (N, in, H/s, W/s)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv_pw(x)  # (N, out, H/s, W/s)
        x = self.bn2(x)
        return self.act2(x)


class Bottleneck(nn.Module):
    """1x1 reduce -> kxk (strided) -> 1x1 expand, + shortcut, then the activation (ResNet V1.5).

    The shortcut is the input itself where shapes are unchanged (with drop path on the residual
    branch), else a strided 1x1 convolution + BN (`conv_shortcut`, `bn_shortcut`). Layer names
    follow torchvision's and timm's Bottleneck (conv1..3, bn1..3).
    """

    def __init__(self, plan: BlockPlan, activation: str, padding: str, bn_eps: float,
                 bn_momentum: float) -> None:
        super().__init__()
        mid = plan.mid_channels
        self.projects = plan.shortcut == "projection"
        self.conv1 = make_conv(plan.in_channels, mid, 1, padding=padding)
        self.bn1 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self.act1 = make_activation(activation)
        self.conv2 = make_conv(mid, mid, plan.kernel_size, plan.stride, padding=padding)
        self.bn2 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=bn_momentum)
        self.act2 = make_activation(activation)
        self.conv3 = make_conv(mid, plan.out_channels, 1, padding=padding)
        self.bn3 = nn.BatchNorm2d(plan.out_channels, eps=bn_eps, momentum=bn_momentum)
        if self.projects:
            self.conv_shortcut = make_conv(plan.in_channels, plan.out_channels, 1, plan.stride, padding=padding)
            self.bn_shortcut = nn.BatchNorm2d(plan.out_channels, eps=bn_eps, momentum=bn_momentum)
        else:
            self.conv_shortcut, self.bn_shortcut = nn.Identity(), nn.Identity()
        rate = plan.drop_path_rate if plan.has_skip else 0.0
        self.drop_path = StochasticDepth(rate, mode="row") if rate > 0 else nn.Identity()
        self.act3 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv1(x)  # (N, mid, H, W)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)  # (N, mid, H/s, W/s)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.conv3(x)  # (N, out, H/s, W/s)
        x = self.bn3(x)
        if self.projects:
            shortcut = self.conv_shortcut(shortcut)  # (N, out, H/s, W/s)
            shortcut = self.bn_shortcut(shortcut)
        elif self.training:
            x = self.drop_path(x)
        x = x + shortcut
        return self.act3(x)


BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "mbconv": MBConv,
    "dsconv": DepthwiseSeparable,
    "bottleneck": Bottleneck,
}
