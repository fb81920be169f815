"""A stride-1 depthwise kernel that loads each input row once per program (experimental).

`kernels.depthwise` loads a k x k window for every output row: k² tile loads per row. On an H100
its 5 x 5 stride-1 layers run at 290-380 GB/s whatever the tiles (benchmarks/RESULTS.md, run 3),
and Nsight Compute shows the kernel latency-bound (28% occupancy, ~10 cycles per instruction).
This kernel walks down a column strip of ROWS output rows instead. For each of the ROWS + k - 1
input rows it loads the k horizontally shifted tiles once and adds them into the k output rows
that use that input row. Those rows are k accumulators rolled down one row per step, and the
oldest is complete and stored at each step. That is k loads per output row instead of k², with
the same k² multiply-adds.

Output and SE sums equal `kernels.depthwise`'s up to float32 rounding (the taps are summed row by
row). Stride 1
only. It is timed as a variant in `benchmarks/depthwise_sweep.py` and is not used by the model
until a GPU run shows it is faster.
"""
from __future__ import annotations

import torch

from effnet.fast.kernels import INTERPRET, _pow2, act_mode, map_alignment, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple, _silu, _tap_weight

    @triton.jit
    def _rolling_depthwise_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr,
                                  H, W, C, HO, WO, pad_h, pad_w,
                                  sxn, sxh, sxw, sxc, syn, syh, syw, syc,
                                  K: tl.constexpr, ACT: tl.constexpr, POOL: tl.constexpr,
                                  BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, ROWS: tl.constexpr,
                                  ALIGN: tl.constexpr):
        # One program: ROWS output rows x BLOCK_W pixels x BLOCK_C channels, walked top to bottom.
        C, sxn, sxh, sxw = _multiple(C, ALIGN), _multiple(sxn, ALIGN), _multiple(sxh, ALIGN), _multiple(sxw, ALIGN)
        syn, syh, syw = _multiple(syn, ALIGN), _multiple(syh, ALIGN), _multiple(syw, ALIGN)  # (`kernels.alignment`)
        pid = tl.program_id(0)
        blocks_w = tl.cdiv(WO, BLOCK_W)
        blocks_h = tl.cdiv(HO, ROWS)
        wo = (pid % blocks_w) * BLOCK_W + tl.arange(0, BLOCK_W)  # (BW,)
        h0 = ((pid // blocks_w) % blocks_h) * ROWS
        n = pid // (blocks_w * blocks_h)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        wo_ok = wo < WO
        x_ptr += n * sxn
        bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        pooled = tl.zeros([BLOCK_C], dtype=tl.float32)
        # acc_j collects output row h0 + t - j; acc_{K-1} is complete after input row t.
        acc0 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc3 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc4 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        for t in range(ROWS + K - 1):
            hi = h0 - pad_h + t
            row_ok = (hi >= 0) & (hi < H)
            for kw in tl.static_range(K):
                # Input row `hi` shifted by kw, loaded once, feeds all K output rows that use it.
                wi = wo - pad_w + kw  # (BW,)
                ok = (wi >= 0) & (wi < W) & row_ok
                x = tl.load(x_ptr + hi * sxh + wi[:, None] * sxw + c[None, :] * sxc,
                            mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)  # (BW, BC)
                acc0 += x * _tap_weight(w_ptr, 0, kw, c, c_ok, C, K)[None, :]
                acc1 += x * _tap_weight(w_ptr, 1, kw, c, c_ok, C, K)[None, :]
                acc2 += x * _tap_weight(w_ptr, 2, kw, c, c_ok, C, K)[None, :]
                if K == 5:
                    acc3 += x * _tap_weight(w_ptr, 3, kw, c, c_ok, C, K)[None, :]
                    acc4 += x * _tap_weight(w_ptr, 4, kw, c, c_ok, C, K)[None, :]
            if K == 5:
                done = acc4
            else:
                done = acc2
            ho = h0 + t - (K - 1)  # the row `done` holds
            done = done + bias[None, :]
            if ACT:
                done = _silu(done, ACT)
            out_ok = (wo_ok & (t >= K - 1) & (ho < h0 + ROWS) & (ho < HO))[:, None] & c_ok[None, :]
            tl.store(y_ptr + n * syn + ho * syh + wo[:, None] * syw + c[None, :] * syc,
                     done.to(y_ptr.dtype.element_ty), mask=out_ok)
            if POOL:
                pooled += tl.sum(tl.where(out_ok, done, 0.0), axis=0)
            if K == 5:
                acc4 = acc3
                acc3 = acc2
            acc2 = acc1
            acc1 = acc0
            acc0 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        if POOL:
            tl.atomic_add(pool_ptr + n * C + c, pooled, mask=c_ok)


def rolling_depthwise(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, *, kernel_size: int,
                      padding: tuple[int, int], output_size: tuple[int, int], act: bool, pool: bool,
                      tiles: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kernels.depthwise` for stride 1 and k in (3, 5), each input row loaded once per program.

    `tiles` = (BLOCK_W, BLOCK_C, ROWS, num_warps): a program computes ROWS output rows of BLOCK_W
    pixels x BLOCK_C channels.
    """
    if kernel_size not in (3, 5):
        raise ValueError(f"rolling_depthwise takes 3x3 or 5x5 kernels, got {kernel_size}x{kernel_size}")
    batch, channels, height, width = x.shape
    out_h, out_w = output_size
    y = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    sums = torch.zeros((batch, channels), device=x.device, dtype=torch.float32) if pool else y
    if tiles is None:
        tiles = (8, 16, 4, 4) if INTERPRET else (_pow2(out_w, 4, 16), _pow2(channels, 16, 64), 16, 4)
    block_w, block_c, rows, warps = tiles
    grid = (batch * triton.cdiv(out_h, rows) * triton.cdiv(out_w, block_w), triton.cdiv(channels, block_c))
    _rolling_depthwise_kernel[grid](
        x, weight_taps, bias, y, sums, height, width, channels, out_h, out_w, padding[0], padding[1],
        x.stride(0), x.stride(2), x.stride(3), x.stride(1), y.stride(0), y.stride(2), y.stride(3), y.stride(1),
        K=kernel_size, ACT=act_mode(act, y), POOL=pool, BLOCK_W=block_w, BLOCK_C=block_c, ROWS=rows,
        ALIGN=map_alignment(x, y),
        **({} if INTERPRET else {"num_warps": warps}))
    return y, (sums if pool else None)
