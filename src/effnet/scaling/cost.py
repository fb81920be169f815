"""Analytic cost model: parameters and multiply-accumulates from a spec, without building it.

Counts what the built model has: convolutions and the classifier (weights and biases) and BN
affine parameters; MACs of convolutions and the classifier, the operations that
`torch.utils.flop_counter` counts (each MAC is 2 of its FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass

from effnet.scaling.plan import NetworkPlan, resolve
from effnet.spec.types import NetworkSpec


def _out_size(size: int, stride: int) -> int:
    # Odd kernels with symmetric k//2 padding or TF "same" padding both give ceil(size / stride).
    return -(-size // stride)


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int
    resolution: tuple[int, int]


def _block_cost(block, height: int, width: int) -> tuple[int, int, int, int]:
    """(params, macs, out_height, out_width) of one MBConv block."""
    params = macs = 0
    if block.expands:
        params += block.in_channels * block.mid_channels + 2 * block.mid_channels
        macs += height * width * block.in_channels * block.mid_channels
    height, width = _out_size(height, block.stride), _out_size(width, block.stride)
    params += block.kernel_size**2 * block.mid_channels + 2 * block.mid_channels
    macs += height * width * block.kernel_size**2 * block.mid_channels
    if block.se_channels:
        params += 2 * block.mid_channels * block.se_channels + block.se_channels + block.mid_channels
        macs += 2 * block.mid_channels * block.se_channels
    params += block.mid_channels * block.out_channels + 2 * block.out_channels
    macs += height * width * block.mid_channels * block.out_channels
    return params, macs, height, width


def plan_cost(plan: NetworkPlan, resolution: tuple[int, int], num_classes: int = 1000,
              in_channels: int = 3) -> Cost:
    height, width = (_out_size(size, plan.stem_stride) for size in resolution)
    stem_weights = plan.stem_kernel_size**2 * in_channels * plan.stem_channels
    params = stem_weights + 2 * plan.stem_channels
    macs = height * width * stem_weights
    for block in plan.blocks:
        block_params, block_macs, height, width = _block_cost(block, height, width)
        params += block_params
        macs += block_macs
    last = plan.stages[-1][-1].out_channels
    params += last * plan.head_channels + 2 * plan.head_channels
    macs += height * width * last * plan.head_channels
    if num_classes > 0:
        params += plan.head_channels * num_classes + num_classes
        macs += plan.head_channels * num_classes
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
