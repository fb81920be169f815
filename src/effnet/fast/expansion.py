"""A Triton kernel that folds an MBConv block's 1x1 expansion into its depthwise pass (experimental).

The three-pass block writes the expanded tensor (the block's largest, `expand_ratio` times its
input) and reads it back for the depthwise convolution. This kernel never writes it: for each of
the k x k taps it recomputes the expansion, SiLU(x @ W_expand + b), of that tap's input pixels on
the tensor cores and accumulates the depthwise product at once. It reads the narrow input k²/s²
times (from cache) instead of the wide tensor once, and costs k²/s² times the expansion's MACs:
cheap for stride 2 (2.25x at 3x3, 6.25x at 5x5), heavy for 5x5 stride 1 (25x), so
`effnet.fast.fused` applies it only up to `MAX_RECOMPUTE`.

Output and SE sums are those of `kernels.depthwise` applied to the expansion's output rounded to
the activation dtype, as the unfused passes would store it. Opt-in through
`optimize_for_inference(..., fuse_expansion=True)`, and not worth it as written: on an H100 it made
B0 6.2x and B4 3.4x slower than the three-pass blocks (benchmarks/RESULTS.md, run 4), since the
recomputed matrix products cost far more than the one write and read of the tensor they save.
"""
from __future__ import annotations

import torch

from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, _pow2, act_mode, map_alignment, triton

# Largest k²/s² (recomputation of the expansion per output pixel) the fused path accepts.
MAX_RECOMPUTE = 9

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _multiple, _silu, _tap

    @triton.jit
    def _expand_depthwise_kernel(x_ptr, we_ptr, be_ptr, wd_ptr, bd_ptr, y_ptr, pool_ptr,
                                 H, W, CIN, C, HO, WO, stride, pad_h, pad_w,
                                 sxn, sxh, sxw, sxc, syn, syh, syw, syc,
                                 K: tl.constexpr, ACT: tl.constexpr, POOL: tl.constexpr, IEEE: tl.constexpr,
                                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
                                 ALIGN: tl.constexpr):
        # One program: BLOCK_P output pixels of one row x BLOCK_C expanded channels.
        CIN, C, sxn, sxh, sxw = (_multiple(CIN, ALIGN), _multiple(C, ALIGN), _multiple(sxn, ALIGN),
                                 _multiple(sxh, ALIGN), _multiple(sxw, ALIGN))
        syn, syh, syw = _multiple(syn, ALIGN), _multiple(syh, ALIGN), _multiple(syw, ALIGN)  # (`kernels.alignment`)
        pid = tl.program_id(0)
        blocks_w = tl.cdiv(WO, BLOCK_P)
        wo = (pid % blocks_w) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
        ho = (pid // blocks_w) % HO
        n = pid // (blocks_w * HO)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        wo_ok = wo < WO
        expand_bias = tl.load(be_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for kh in tl.static_range(K):
            for kw in tl.static_range(K):
                hi, wi, ok = _tap(ho, wo, wo_ok, kh, kw, stride, pad_h, pad_w, H, W)  # wi, ok: (BP,)
                expanded = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
                for k0 in range(0, CIN, BLOCK_K):
                    k = k0 + tl.arange(0, BLOCK_K)
                    k_ok = k < CIN
                    a = tl.load(x_ptr + n * sxn + hi * sxh + wi[:, None] * sxw + k[None, :] * sxc,
                                mask=ok[:, None] & k_ok[None, :], other=0.0)  # (BP, BK)
                    b = tl.load(we_ptr + k[:, None] * C + c[None, :], mask=k_ok[:, None] & c_ok[None, :],
                                other=0.0)  # (BK, BC)
                    expanded += _dot(a, b, IEEE)
                expanded += expand_bias[None, :]
                expanded = _silu(expanded, ACT)
                # Rounded as the stored activation would be; zero where the tap falls in the padding.
                expanded = expanded.to(y_ptr.dtype.element_ty).to(tl.float32)
                expanded = tl.where(ok[:, None], expanded, 0.0)
                tap = tl.load(wd_ptr + (kh * K + kw) * C + c, mask=c_ok, other=0.0).to(tl.float32)
                acc += expanded * tap[None, :]
        acc += tl.load(bd_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        acc = _silu(acc, ACT)
        out_ok = wo_ok[:, None] & c_ok[None, :]
        tl.store(y_ptr + n * syn + ho * syh + wo[:, None] * syw + c[None, :] * syc,
                 acc.to(y_ptr.dtype.element_ty), mask=out_ok)
        if POOL:
            tl.atomic_add(pool_ptr + n * C + c, tl.sum(tl.where(out_ok, acc, 0.0), axis=0), mask=c_ok)


def expand_depthwise(x: torch.Tensor, expand_t: torch.Tensor, expand_bias: torch.Tensor, taps: torch.Tensor,
                     bias: torch.Tensor, *, kernel_size: int, stride: int, padding: tuple[int, int],
                     output_size: tuple[int, int], pool: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SiLU(depthwise(SiLU(x @ expand_t + expand_bias)) + bias) of channels-last `x`, and its SE sums.

    `expand_t` is the expansion's weights laid out (in, mid); `taps` the depthwise's (k*k, mid).
    """
    batch, in_channels, height, width = x.shape
    channels = expand_t.shape[1]
    out_h, out_w = output_size
    y = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    sums = torch.zeros((batch, channels), device=x.device, dtype=torch.float32) if pool else y
    block_p = 16 if INTERPRET else _pow2(out_w, 16, 32)
    block_c = 16 if INTERPRET else _pow2(channels, 16, 64)
    block_k = 16 if INTERPRET else _pow2(in_channels, 16, 64)
    grid = (batch * out_h * cdiv(out_w, block_p), cdiv(channels, block_c))
    _expand_depthwise_kernel[grid](
        x, expand_t, expand_bias, taps, bias, y, sums, height, width, in_channels, channels, out_h, out_w, stride,
        padding[0], padding[1], x.stride(0), x.stride(2), x.stride(3), x.stride(1),
        y.stride(0), y.stride(2), y.stride(3), y.stride(1),
        K=kernel_size, ACT=act_mode(True, y), POOL=pool, IEEE=x.dtype == torch.float32, BLOCK_P=block_p,
        BLOCK_C=block_c, BLOCK_K=block_k,
        ALIGN=map_alignment(x, y),
        **({} if INTERPRET else {"num_warps": 4}))
    return y, (sums if pool else None)
