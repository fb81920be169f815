"""The fused inference passes as PyTorch custom operators, for `torch.compile` and `torch.export`.

Eager code launches the Triton kernels directly (`effnet.fast.ops`), which no graph tracer can
follow: the launch reads raw pointers and, under TRITON_INTERPRET, runs Python over the tensors.
While a graph is traced (`torch.compiler.is_compiling()`), `ops` calls these operators instead, so a
fast model compiles in one graph: each pass is one opaque node (`effnet::fused_depthwise`,
`effnet::fused_pointwise`, `effnet::fused_stem`) whose implementation is the eager Triton path,
tuning file included, and whose fake implementation gives the output's shape, dtype and
channels-last strides. Inductor compiles what lies between them (the SE's small products, the head,
the input cast); tested on CPU under the interpreter, timed on a GPU by the bench's compile row (run 9, an
H200: B0 at batch 256 in 6.28 ms, the eager fused forward captured in a CUDA graph 4.93). Inference only: the
operators have no autograd formula (the training kernels are `effnet.fast.depthwise_train`).
"""
from __future__ import annotations

import torch


def channels_last_empty(like: torch.Tensor, shape: tuple, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised channels-last tensor on `like`'s device (its dtype by default): what the kernels
    allocate, so what the fake functions (these and `depthwise_train`'s) must give."""
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype, memory_format=torch.channels_last)


def pixel_rows(t: torch.Tensor) -> torch.Tensor:
    """The (pixels, channels) matrix of a channels-last (N, C, H, W) tensor: a view of it (a copy otherwise)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


@torch.library.custom_op("effnet::fused_depthwise", mutates_args=())
def fused_depthwise(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, kernel_size: int, stride: int,
                    padding: list[int], output_size: list[int], act: bool,
                    pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`ops.tuned_depthwise`: (SiLU(depthwise(x) + bias), float32 channel sums (N, C); (0,) without `pool`)."""
    from effnet.fast.ops import tuned_depthwise

    y, sums = tuned_depthwise(x, weight_taps, bias, kernel_size=kernel_size, stride=stride, padding=tuple(padding),
                              output_size=tuple(output_size), act=act, pool=pool)
    return y, sums if sums is not None else x.new_empty((0,), dtype=torch.float32)


@fused_depthwise.register_fake
def _(x, weight_taps, bias, kernel_size, stride, padding, output_size, act, pool):
    batch, channels = x.shape[:2]
    sums = x.new_empty((batch, channels) if pool else (0,), dtype=torch.float32)
    return channels_last_empty(x, (batch, channels, *output_size)), sums


@torch.library.custom_op("effnet::fused_pointwise", mutates_args=())
def fused_pointwise(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, act: bool,
                    gate: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    """`ops.tuned_pointwise`: act(conv1x1(x * gate) + bias) + residual, channels-last."""
    from effnet.fast.ops import tuned_pointwise

    return tuned_pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual)


@fused_pointwise.register_fake
def _(x, weight_t, bias, act, gate, residual):
    batch, _, height, width = x.shape
    return channels_last_empty(x, (batch, weight_t.shape[1], height, width))


@torch.library.custom_op("effnet::fused_stem", mutates_args=())
def fused_stem(x: torch.Tensor, weight_cols: torch.Tensor, bias: torch.Tensor, kernel_size: int, stride: int,
               padding: list[int], output_size: list[int]) -> torch.Tensor:
    """`stem._launch`: SiLU(conv(x cast to the weights' dtype) + bias), channels-last."""
    from effnet.fast.stem import _launch

    return _launch(x, weight_cols, bias, kernel_size=kernel_size, stride=stride, padding=tuple(padding),
                   output_size=tuple(output_size))


@fused_stem.register_fake
def _(x, weight_cols, bias, kernel_size, stride, padding, output_size):
    return channels_last_empty(x, (x.shape[0], weight_cols.shape[1], *output_size), weight_cols.dtype)
