"""Analytic cost model: parameters and multiply-accumulates from a spec, without building it.

Counts what the built model has: convolutions and the classifier (weights and biases) and BN
affine parameters; MACs of convolutions and the classifier, the operations that
`torch.utils.flop_counter` counts (each MAC is 2 of its FLOPs). Pooling, activations, BN and
residual additions are left out of the MACs, as the counter leaves them out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from effnet.errors import SpecError
from effnet.scaling.plan import BlockPlan, NetworkPlan, resolve
from effnet.spec.types import NetworkSpec


def _out_size(size: int, stride: int) -> int:
    # Odd kernels with symmetric k//2 padding or TF "same" padding both give ceil(size / stride).
    return -(-size // stride)


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    resolution: tuple[int, int]


def _conv(in_channels: int, out_channels: int, kernel_size: int, height: int, width: int,
          groups: int = 1) -> tuple[int, int]:
    """(params, macs) of a bias-free convolution followed by BatchNorm, at its output size."""
    weights = kernel_size**2 * in_channels // groups * out_channels
    return weights + 2 * out_channels, height * width * weights


def _mbconv_cost(block: BlockPlan, height: int, width: int) -> tuple[int, int, int, int]:
    """(params, macs, out_height, out_width) of one MBConv block."""
    params = macs = 0
    if block.expands:
        params, macs = _conv(block.in_channels, block.mid_channels, 1, height, width)
    height, width = _out_size(height, block.stride), _out_size(width, block.stride)
    dw_params, dw_macs = _conv(block.mid_channels, block.mid_channels, block.kernel_size, height, width,
                               groups=block.mid_channels)
    params, macs = params + dw_params, macs + dw_macs
    if block.se_channels:
        params += 2 * block.mid_channels * block.se_channels + block.se_channels + block.mid_channels
        macs += 2 * block.mid_channels * block.se_channels
    pwl_params, pwl_macs = _conv(block.mid_channels, block.out_channels, 1, height, width)
    return params + pwl_params, macs + pwl_macs, height, width


def _dsconv_cost(block: BlockPlan, height: int, width: int) -> tuple[int, int, int, int]:
    """(params, macs, out_height, out_width) of one depthwise-separable block."""
    height, width = _out_size(height, block.stride), _out_size(width, block.stride)
    dw_params, dw_macs = _conv(block.in_channels, block.in_channels, block.kernel_size, height, width,
                               groups=block.in_channels)
    pw_params, pw_macs = _conv(block.in_channels, block.out_channels, 1, height, width)
    return dw_params + pw_params, dw_macs + pw_macs, height, width


def _bottleneck_cost(block: BlockPlan, height: int, width: int) -> tuple[int, int, int, int]:
    """(params, macs, out_height, out_width) of one ResNet bottleneck (stride on the kxk conv)."""
    params, macs = _conv(block.in_channels, block.mid_channels, 1, height, width)
    height, width = _out_size(height, block.stride), _out_size(width, block.stride)
    for cost in (_conv(block.mid_channels, block.mid_channels, block.kernel_size, height, width),
                 _conv(block.mid_channels, block.out_channels, 1, height, width)):
        params, macs = params + cost[0], macs + cost[1]
    if block.shortcut == "projection":  # strided 1x1: the same output size as the kxk conv
        shortcut_params, shortcut_macs = _conv(block.in_channels, block.out_channels, 1, height, width)
        params, macs = params + shortcut_params, macs + shortcut_macs
    return params, macs, height, width


_BLOCK_COSTS: dict[str, Callable[[BlockPlan, int, int], tuple[int, int, int, int]]] = {
    "mbconv": _mbconv_cost,
    "dsconv": _dsconv_cost,
    "bottleneck": _bottleneck_cost,
}


def plan_cost(plan: NetworkPlan, resolution: tuple[int, int], num_classes: int = 1000,
              in_channels: int = 3) -> Cost:
    for name, value, least in (("num_classes", num_classes, 0), ("in_channels", in_channels, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:  # as create_model checks
            raise SpecError(f"{name} must be a whole number >= {least}, got {value!r}")
    height, width = (_out_size(size, plan.stem_stride) for size in resolution)
    params, macs = _conv(in_channels, plan.stem_channels, plan.stem_kernel_size, height, width)
    if plan.stem_pool == "max":  # 3x3, stride 2, padding 1: ceil(size / 2), and no MACs
        height, width = _out_size(height, 2), _out_size(width, 2)
    for block in plan.blocks:
        block_params, block_macs, height, width = _BLOCK_COSTS[block.block](block, height, width)
        params += block_params
        macs += block_macs
    if plan.head_channels:
        head_params, head_macs = _conv(plan.stages[-1][-1].out_channels, plan.head_channels, 1, height, width)
        params, macs = params + head_params, macs + head_macs
    if num_classes > 0:
        params += plan.num_features * num_classes + num_classes
        macs += plan.num_features * num_classes
    return Cost(params=params, macs=macs, resolution=tuple(resolution))


def spec_cost(spec: NetworkSpec, resolution: int | tuple[int, int] | None = None,
              num_classes: int = 1000, in_channels: int = 3) -> Cost:
    """Parameters and MACs of `spec` at `resolution` (default: the spec's own)."""
    size = resolution if resolution is not None else spec.resolution
    if isinstance(size, int):
        size = (size, size)
    return plan_cost(resolve(spec), size, num_classes, in_channels)


def count_params(spec: NetworkSpec, num_classes: int = 1000, in_channels: int = 3) -> int:
    """Exactly `sum(p.numel() for p in create_model(spec).parameters())`."""
    return spec_cost(spec, num_classes=num_classes, in_channels=in_channels).params


def count_macs(spec: NetworkSpec, resolution: int | tuple[int, int] | None = None,
               num_classes: int = 1000, in_channels: int = 3) -> int:
    """Multiply-accumulates of one image at `resolution` (default: the spec's own)."""
    return spec_cost(spec, resolution, num_classes, in_channels).macs
