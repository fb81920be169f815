"""The inference depthwise conv through cuDNN, then one pass for its SiLU and the squeeze-excitation's pool: a
tuning-file choice for the layers where the library's conv is faster than the Triton kernel.

Run 8 (an H200, benchmarks/RESULTS.md) timed PyTorch's own three passes (cuDNN's conv with its bias, an in-place
SiLU, then the SE's mean) beside the fused Triton kernel, which does all three in one pass. On B4's 5 x 5
stride-1 layers at 48 and 24 px, where each tap re-reads a shifted tile from L2, the three passes won: 772
against 1,200 us (x 3 layers), 554 against 828 (x 5), 401 against 585; on B0's 240-channel 5 x 5 at 28 px 423
against 440. Here the conv is cuDNN's (`F.conv2d` without the bias, channels-last, the kernels' padding:
`ops.padded_conv2d`), and one Triton pass over its output adds the bias, applies the SiLU in place and adds each
image's float32 channel sums, as the fused kernel pools them (before rounding): one read and one write of the
output where PyTorch's composite takes three reads and two writes (its cuDNN conv adds the bias in a pass of its
own, then the SiLU, then the mean). `benchmarks/depthwise_sweep.py` times it per layer
("cudnn") and records it where it wins (tuning kernel `cudnn` for `depthwise`, no tiles). Never a default.
"""
from __future__ import annotations

import torch

from effnet.fast import kernels, ops
from effnet.fast.affine_grad import WARPS, row_tiles
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple, _silu

    @triton.jit
    def _activate_pool_kernel(y_ptr, bias_ptr, sums_ptr, pixels, C, ACT: tl.constexpr, POOL: tl.constexpr,
                              ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_M of one image's pixels x BLOCK_C channels of channels-last y ((N * pixels, C) as a
        # matrix). It writes y + bias in place, through the SiLU with ACT; with POOL it adds the float32 column
        # sums of what it wrote (before rounding) to the image's row of `sums_ptr` (N, C).
        C = _multiple(C, ALIGN)
        blocks = tl.cdiv(pixels, BLOCK_M)
        n = tl.program_id(0) // blocks
        p = (tl.program_id(0) % blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        ok = (p < pixels)[:, None] & c_ok[None, :]
        offsets = (n * pixels + p)[:, None] * C + c[None, :]
        y = tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        y += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        if ACT:
            y = _silu(y, ACT)
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=ok)
        if POOL:
            tl.atomic_add(sums_ptr + n * C + c, tl.sum(tl.where(ok, y, 0.0), axis=0), mask=c_ok)


_TILE = 4096  # values per (BLOCK_M, BLOCK_C) tile of the activation pass


def conv_weight(weight_taps: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The depthwise conv's (C, 1, k, k) weight in `dtype` from its (k * k, C) taps (the fused model's layout), in
    one copy that casts."""
    channels = weight_taps.shape[1]
    weight = weight_taps.new_empty((channels, 1, kernel_size, kernel_size), dtype=dtype)
    weight.view(channels, kernel_size * kernel_size).copy_(weight_taps.t())
    return weight


def depthwise_cudnn(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, *, kernel_size: int,
                    stride: int, padding: tuple[int, int], output_size: tuple[int, int], act: bool,
                    pool: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kernels.depthwise`'s arguments and result, the conv through the library: (channels-last SiLU(depthwise(x)
    + bias), with `pool` the float32 per-image channel sums (N, C) of that output, else None)."""
    # No bias in the conv: PyTorch's cuDNN path would add it in a pass of its own (`output.add_(bias)` after the
    # library's conv), which the activation pass does as it loads each value.
    y = ops.padded_conv2d(x, conv_weight(weight_taps, kernel_size, x.dtype), None, stride=stride, padding=padding,
                          output_size=output_size, groups=x.shape[1])
    y = y.contiguous(memory_format=torch.channels_last)
    batch, channels, height, width = y.shape
    sums = torch.zeros((batch, channels), device=y.device, dtype=torch.float32) if pool else None
    block_m, block_c = row_tiles(channels, _TILE)
    grid = (batch * cdiv(height * width, block_m), cdiv(channels, block_c))
    _activate_pool_kernel[grid](y, bias, sums if pool else y, height * width, channels, ACT=kernels.act_mode(act, y),
                                POOL=pool, ALIGN=kernels.map_alignment(y), BLOCK_M=block_m, BLOCK_C=block_c,
                                **({} if INTERPRET else {"num_warps": WARPS}))
    return y, sums
