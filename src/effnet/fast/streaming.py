"""A persistent, pipelined Triton kernel for 1x1 convolutions with few input channels (experimental).

On an H100 (bf16, B0, batch 256; benchmarks/results/2026-11-26_h100_run3.log) `kernels.pointwise`
reaches only half of cuDNN's bandwidth on the MBConv expansions (K = 16..192 input channels, many
output channels, + bias + SiLU): 16 -> 96 at 112 x 112 takes 534 us against 276 us for the bare
cuDNN convolution. There K fits one BLOCK_K, so each of its programs loads, multiplies, runs the
epilogue and stores with nothing overlapped, and its three-stage buffers for a loop of one
iteration only limit how many programs fit on an SM.

Here a program loads its (K, BLOCK_N) weight tile and its bias once, then streams over the
(BLOCK_M, K) activation tiles `programs_m` apart: the loop over tiles is what Triton's software
pipeliner (`num_stages`) overlaps, prefetching the next tile's activations while the current one
is multiplied and stored. Same function as `kernels.pointwise` without a gate; a sweep variant
(benchmarks/pointwise_sweep.py), not a default, until a GPU run shows where it pays.
"""
from __future__ import annotations

import torch

from effnet.fast.kernels import INTERPRET, _pow2, alignment, matrix_views, triton

# Most input channels the kernel holds in one weight tile; wider layers take `kernels.pointwise`.
MAX_K = 256
# Persistent programs along M under Triton's interpreter, where there are no SMs to fill.
INTERPRET_PROGRAMS = 2

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _multiple

    @triton.jit
    def _streaming_kernel(a_ptr, b_ptr, bias_ptr, res_ptr, out_ptr, M, N, K,
                          s_am, s_ak, s_bk, s_bn, s_om, s_on, s_rm, s_rn,
                          ACT: tl.constexpr, RESIDUAL: tl.constexpr, IEEE: tl.constexpr, ALIGN: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # out (M, N) = act(a @ b + bias) + residual; M = images x pixels, K <= BLOCK_K.
        # Program (i, j): columns block j, row tiles i, i + programs_m, i + 2 programs_m, ...
        N, K, s_am, s_bk = _multiple(N, ALIGN), _multiple(K, ALIGN), _multiple(s_am, ALIGN), _multiple(s_bk, ALIGN)
        s_om, s_rm = _multiple(s_om, ALIGN), _multiple(s_rm, ALIGN)  # (`kernels.alignment`)
        pid_m = tl.program_id(0)
        programs_m = tl.num_programs(0)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        rk = tl.arange(0, BLOCK_K)  # (BK,)
        n_ok = rn < N
        k_ok = rk < K
        b = tl.load(b_ptr + rk[:, None] * s_bk + rn[None, :] * s_bn, mask=k_ok[:, None] & n_ok[None, :],
                    other=0.0)  # (BK, BN)
        bias = tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)  # (BN,)
        for tile in range(pid_m, tl.cdiv(M, BLOCK_M), programs_m):
            rm = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
            m_ok = rm < M
            a = tl.load(a_ptr + rm[:, None] * s_am + rk[None, :] * s_ak, mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0)  # (BM, BK)
            acc = _dot(a, b, IEEE)  # (BM, BN)
            acc += bias[None, :]
            if ACT:
                acc = acc * tl.sigmoid(acc)
            out_ok = m_ok[:, None] & n_ok[None, :]
            if RESIDUAL:
                acc += tl.load(res_ptr + rm[:, None] * s_rm + rn[None, :] * s_rn, mask=out_ok,
                               other=0.0).to(tl.float32)
            tl.store(out_ptr + rm[:, None] * s_om + rn[None, :] * s_on, acc.to(out_ptr.dtype.element_ty),
                     mask=out_ok)


def _streaming_tiles(block_k: int) -> tuple[int, int, int, int, int]:
    """Unmeasured defaults: three stages of 128-row activation tiles up to K = 64 (16 KiB each in
    bf16); wider K takes two stages of 64-row tiles (32 KiB each at K = 256)."""
    if INTERPRET:
        return 16, 16, 4, 1, 1
    return (128, 64, 4, 3, 2) if block_k <= 64 else (64, 64, 4, 2, 2)


def pointwise_streaming(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *, act: bool,
                        residual: torch.Tensor | None = None, tiles: tuple[int, int, int, int, int] | None = None,
                        programs: int | None = None) -> torch.Tensor:
    """`kernels.pointwise(x, weight_t, bias, act=act, residual=residual)` for up to `MAX_K` input channels.

    `x` is NCHW-shaped with channels-last memory, `weight_t` the weights laid out (in, out),
    `residual` (N, out, H, W, channels-last) is added after the activation. `tiles` =
    (BLOCK_M, BLOCK_N, num_warps, num_stages, programs_per_sm) overrides the tile choice; the
    grid has `programs` persistent programs along M (default programs_per_sm x the SM count, or
    `INTERPRET_PROGRAMS` under the interpreter; never more than there are row tiles) for each
    block of BLOCK_N output channels.
    """
    batch, channels, height, width = x.shape
    if channels > MAX_K:
        raise ValueError(f"pointwise_streaming holds at most {MAX_K} input channels in one tile, got {channels}; "
                         "use kernels.pointwise")
    out_channels = weight_t.shape[1]
    rows = batch * height * width
    out, a, o, r = matrix_views(x, out_channels, residual)
    block_k = _pow2(channels, 16, MAX_K)
    block_m, block_n, warps, stages, per_sm = tiles if tiles is not None else _streaming_tiles(block_k)
    if programs is None:
        programs = (INTERPRET_PROGRAMS if INTERPRET
                    else per_sm * torch.cuda.get_device_properties(x.device).multi_processor_count)
    grid = (min(programs, triton.cdiv(rows, block_m)), triton.cdiv(out_channels, block_n))
    _streaming_kernel[grid](a, weight_t, bias, r, o, rows, out_channels, channels,
                            a.stride(0), a.stride(1), weight_t.stride(0), weight_t.stride(1),
                            o.stride(0), o.stride(1), r.stride(0), r.stride(1),
                            ACT=act, RESIDUAL=residual is not None, IEEE=x.dtype == torch.float32,
                            ALIGN=alignment(a.stride(0), weight_t.stride(0), o.stride(0), r.stride(0)),
                            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                            **({} if INTERPRET else {"num_warps": warps, "num_stages": stages}))
    return out
