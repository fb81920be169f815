"""The training depthwise conv through cuDNN, pass by pass, for the layers where a sweep finds it faster.

`bn_depthwise`'s forward is one Triton kernel (the conv, with its output's batch statistics in the epilogue; run
7: 2.49 ms of an eager B0 step at batch 128, where cuDNN's forward in the plain model's step took 1.05).
`forward` here takes cuDNN's conv and one more pass reading y for the statistics. Its backward runs two Triton
kernels: the weight gradient, which forms and writes g = dy + dmean / n + (2 dvar / n)(y - mean), and the input
gradient, which gathers g over the taps and applies the SiLU's and bn1's derivatives in its epilogue. In run 7
they took 8.5 ms of an eager B0 step at batch 128, where cuDNN's own depthwise gradients in the plain model's
step took 3.5-4.5 (its `dgrad2d_c1_k1_nhwc` 2.4 ms, the weight gradients 1.1-2.1). This module gives each pass a
cuDNN form (`aten.convolution_backward`, the kernels the plain model's backward runs), at the price of the
element-wise passes those kernels cannot fuse:

- `forward`: cuDNN's conv, then its output's statistics in one pass;
- `output_gradient`: g in one pass, in dy's dtype (needed unless the Triton weight gradient wrote it);
- `weight_grad`: cuDNN's weight gradient of g and the conv's input a;
- `input_grad`: cuDNN's input gradient da of g, then one pass (`affine_grad`) for the SiLU's and bn1's
  derivatives with dscale and dshift.

A tuning entry with kernel `cudnn` for `bn_depthwise`, `bn_depthwise_weight_grad` or `bn_depthwise_input_grad`
picks that pass's cuDNN form for its layer shape (`benchmarks/bn_depthwise_sweep.py` times both forms); the
Triton kernels stay the default until a GPU run says otherwise. Symmetric padding only (`takes`): the
`efficientnet_*` models; the `tf_` twins' "same" padding of even maps pads one side more, and keeps the Triton
kernels.
"""
from __future__ import annotations

import torch

from effnet.fast import bn_stats, kernels, ops
from effnet.fast.affine_grad import WARPS, affine_grad, row_tiles
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple, _row_tile

    @triton.jit
    def _dwc_output_grad_kernel(dy_ptr, y_ptr, stats_ptr, g_ptr, M, C, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                                BLOCK_C: tl.constexpr):
        # g = dy + dmean / n + (2 dvar / n)(y - mean) over the (M, C) channels-last matrices; `stats_ptr` holds
        # the rows dmean / n, 2 dvar / n and mean (`bn_stats.gradient_stats`).
        C = _multiple(C, ALIGN)
        _, c, c_ok, ok, offsets = _row_tile(M, C, BLOCK_M, BLOCK_C)
        dmean = tl.load(stats_ptr + c, mask=c_ok, other=0.0)
        dvar = tl.load(stats_ptr + C + c, mask=c_ok, other=0.0)
        mean = tl.load(stats_ptr + 2 * C + c, mask=c_ok, other=0.0)
        dy = tl.load(dy_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        g = dy + dmean[None, :] + dvar[None, :] * (y - mean[None, :])
        tl.store(g_ptr + offsets, g.to(g_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _dwc_stats_kernel(y_ptr, sums_ptr, m2_ptr, M, C, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_C: tl.constexpr):
        # One program: BLOCK_M rows x BLOCK_C channels of y (M, C); their column sums and sums of squared
        # deviations from their own column means go to row `program_id(0)` of the buffers (`merge_moments`).
        C = _multiple(C, ALIGN)
        rm, c, c_ok, ok, offsets = _row_tile(M, C, BLOCK_M, BLOCK_C)
        y = tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        total = tl.sum(y, axis=0)
        count = tl.maximum(tl.sum((rm < M).to(tl.float32), axis=0), 1.0)
        deviation = tl.where(ok, y - (total / count)[None, :], 0.0)
        tl.store(sums_ptr + tl.program_id(0) * C + c, total, mask=c_ok)
        tl.store(m2_ptr + tl.program_id(0) * C + c, tl.sum(deviation * deviation, axis=0), mask=c_ok)


_TILE = 4096  # values per (BLOCK_M, BLOCK_C) tile of `output_gradient` and the statistics


def takes(x: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
          output_size: tuple[int, int]) -> bool:
    """Whether cuDNN's conv, padded `padding` on both sides, has the output the kernels' padding gives (top and
    left `padding`, bottom and right as `output_size` needs): then its gradients are this conv's."""
    return ops.pads_symmetrically(x, kernel_size, stride, padding, output_size)


def output_gradient(dy: torch.Tensor, stats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g = dy + dmean / n + (2 dvar / n)(y - mean) in dy's dtype and y's channels-last layout; `stats` (3, C)
    holds dmean / n, 2 dvar / n and mean."""
    g = channels_last_empty(y, tuple(y.shape), dy.dtype)
    rows, channels = y.numel() // y.shape[1], y.shape[1]
    block_m, block_c = row_tiles(channels, _TILE)
    _dwc_output_grad_kernel[(cdiv(rows, block_m), cdiv(channels, block_c))](
        dy, y, stats, g, rows, channels, ALIGN=kernels.map_alignment(dy, y, g), BLOCK_M=block_m, BLOCK_C=block_c,
        **({} if INTERPRET else {"num_warps": WARPS}))
    return g


def _tile_rows(rows: int, block_m: int) -> torch.Tensor:
    """Rows in each of the statistics kernel's tiles (the last one short)."""
    return (rows - torch.arange(cdiv(rows, block_m)) * block_m).clamp(max=block_m)


def forward(a: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int,
            padding: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): cuDNN's depthwise conv of a (the activation, channels-last) by the (k * k, C) taps,
    padded `padding` on both sides (`takes`), then its float32 batch mean and biased variance in one pass over
    the stored y (`_dwc_stats_kernel` and `bn_stats.merge_moments`), as the Triton forward gathers them."""
    with torch.autocast(a.device.type, enabled=False):  # y in a's dtype, whatever the caller's autocast
        y = torch.nn.functional.conv2d(a, _weight(taps, kernel_size).to(a.dtype), stride=stride, padding=padding,
                                       groups=a.shape[1])
    y = y.contiguous(memory_format=torch.channels_last)
    return y, *statistics(y)


def statistics(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 batch mean and biased variance of channels-last y per channel, in one pass over y
    (`_dwc_stats_kernel` and `bn_stats.merge_moments`), as the Triton forward gathers them in its epilogue."""
    rows, channels = y.numel() // y.shape[1], y.shape[1]
    block_m, block_c = row_tiles(channels, _TILE)
    tiles = cdiv(rows, block_m)
    sums = torch.empty((tiles, channels), device=y.device, dtype=torch.float32)
    m2 = torch.empty_like(sums)
    _dwc_stats_kernel[(tiles, cdiv(channels, block_c))](
        y, sums, m2, rows, channels, ALIGN=kernels.map_alignment(y), BLOCK_M=block_m, BLOCK_C=block_c,
        **({} if INTERPRET else {"num_warps": WARPS}))
    return bn_stats.merge_moments(sums, m2, bn_stats.block_counts(y.device, _tile_rows, rows, block_m))


def _weight(taps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The (C, 1, k, k) weight of the (k * k, C) taps."""
    return taps.t().reshape(taps.shape[1], 1, kernel_size, kernel_size)


def _gradients(g, conv_input, taps, kernel_size, stride, padding, mask):
    return torch.ops.aten.convolution_backward(g, conv_input, _weight(taps, kernel_size).to(g.dtype), None,
                                               [stride, stride], list(padding), [1, 1], False, [0, 0],
                                               conv_input.shape[1], mask)


def weight_grad(g: torch.Tensor, conv_input: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int,
                padding: tuple[int, int]) -> torch.Tensor:
    """The (k * k, C) float32 gradient of the taps: cuDNN's, of g (the gradient reaching the conv's output) and
    the conv's input (a, or x without an affine map before the conv)."""
    _, dweight, _ = _gradients(g, conv_input, taps, kernel_size, stride, padding, [False, True, False])
    return dweight.flatten(1).t().float().contiguous()  # (k * k, C), laid out as the Triton kernel's


def input_grad(g: torch.Tensor, taps: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None,
               shift: torch.Tensor | None, kernel_size: int, stride: int, padding: tuple[int, int],
               act: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, daffine), daffine (2, C) dscale and dshift, empty without scale: cuDNN's input gradient da of g,
    then dx = da * act'(z) * scale with z = x * scale + shift, and daffine in one pass (`affine_grad`); without an
    affine map dx is da."""
    da, _, _ = _gradients(g, x, taps, kernel_size, stride, padding, [True, False, False])
    return activation_backward(da.to(x.dtype).contiguous(memory_format=torch.channels_last), x, scale, shift, act)


def activation_backward(da: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
                        act: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, daffine) from da, the gradient reaching the conv's input a = act(x * scale + shift): one pass
    (`affine_grad`); without an affine map dx is da and daffine empty."""
    if scale is None:
        return da, x.new_empty((0,), dtype=torch.float32)
    return affine_grad(da, x, scale, shift, act=act)
