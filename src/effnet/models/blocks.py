"""The mobile inverted bottleneck (MBConv) block, built from a `BlockPlan`."""
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
