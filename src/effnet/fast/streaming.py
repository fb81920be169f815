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
is multiplied and stored. Run 5 measured it on B0's two narrowest expansions (16 -> 96 at 112 px:
580 -> 368 us; 24 -> 144 at 56 px: 283 -> 239 us) and no gain from 40 input channels up, so
`ops` takes it by default for ungated layers of at most `DEFAULT_K` input channels on large maps
(`default_for`).

With a squeeze-excitation gate (N, K) the gate scales each activation row as it loads, rounded back
to the operand type (`kernels.pointwise`'s "gate-rows", the same function rounded at another place).
A tile holds at most two images' rows when BLOCK_M <= pixels per image, so a program loads two
(K,) gate rows per tile and picks one per row, where the tiled kernel's gate-rows gathered a
(BLOCK_M, BLOCK_K) float32 block per tile (run 6: 2.4x slower than the gate on the weights on B4's
24 -> 24 projection at 190 px). Gated, it is a sweep variant only: never measured yet.
"""
from __future__ import annotations

import torch

from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, _pow2, act_mode, alignment, matrix_views, triton

# Most input channels the kernel holds in one weight tile; wider layers take `kernels.pointwise`.
MAX_K = 256
# Ungated layers of at most this many input channels and at least DEFAULT_ROWS rows take it by default.
DEFAULT_K = 32
DEFAULT_ROWS = 1 << 19
# Persistent programs along M under Triton's interpreter, where there are no SMs to fill.
INTERPRET_PROGRAMS = 2

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _multiple, _row_gates, _silu

    @triton.jit
    def _streaming_kernel(a_ptr, b_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, M, N, K, pixels,
                          s_am, s_ak, s_bk, s_bn, s_om, s_on, s_rm, s_rn,
                          GATE: tl.constexpr, ACT: tl.constexpr, RESIDUAL: tl.constexpr, IEEE: tl.constexpr,
                          ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # out (M, N) = act((a * gate[row // pixels]) @ b + bias) + residual; M = images x pixels, K <= BLOCK_K,
        # and with GATE, BLOCK_M <= pixels. Program (i, j): columns block j, row tiles i, i + programs_m, ...
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
        # The bias in b's layout (row 0 of a (BK, BN) block, summed down): 16-byte loads, where a (BN,) vector
        # spread over the program's threads loads one bf16 value per instruction.
        bias = tl.sum(tl.load(bias_ptr + rk[:, None] * 0 + rn[None, :], mask=(rk == 0)[:, None] & n_ok[None, :],
                              other=0.0).to(tl.float32), axis=0)  # (BN,)
        for tile in range(pid_m, tl.cdiv(M, BLOCK_M), programs_m):
            rm = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
            m_ok = rm < M
            a = tl.load(a_ptr + rm[:, None] * s_am + rk[None, :] * s_ak, mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0)  # (BM, BK)
            if GATE:
                # Rounded back to the operand type, as `x * gate` in that type would be.
                a = (a.to(tl.float32) * _row_gates(gate_ptr, rm, tile * BLOCK_M, pixels, M, K, rk, k_ok)).to(
                    a_ptr.dtype.element_ty)
            acc = _dot(a, b, IEEE)  # (BM, BN)
            acc += bias[None, :]
            if ACT:
                acc = _silu(acc, ACT)
            out_ok = m_ok[:, None] & n_ok[None, :]
            if RESIDUAL:
                acc += tl.load(res_ptr + rm[:, None] * s_rm + rn[None, :] * s_rn, mask=out_ok,
                               other=0.0).to(tl.float32)
            tl.store(out_ptr + rm[:, None] * s_om + rn[None, :] * s_on, acc.to(out_ptr.dtype.element_ty),
                     mask=out_ok)


def _streaming_tiles(block_k: int, out_channels: int) -> tuple[int, int, int, int, int]:
    """Defaults, two programs per SM, three stages (with two, every step awaits all its copies): for K <= 64 run
    5's winners (16 -> 96 at 112 px: 64-row tiles 128 outputs wide; 24 -> 144 at 56 px: 128-row tiles 64 wide,
    where two stages and three with four programs per SM timed the same); wider K 64-row tiles (32 KiB each
    at K = 256, unmeasured)."""
    if INTERPRET:
        return 16, 16, 4, 1, 1
    if block_k > 64:
        return 64, 64, 4, 3, 2
    return (64, 128, 4, 3, 2) if out_channels <= 128 else (128, 64, 4, 3, 2)


def default_for(x: torch.Tensor, out_channels: int, gated: bool) -> bool:
    """Whether a 1x1 layer the tuning file does not name takes this kernel: ungated, at most `DEFAULT_K` input
    channels (one K step in `kernels.pointwise`, where run 5 measured this kernel faster), at least
    `DEFAULT_ROWS` rows (enough row tiles for every persistent program to loop)."""
    batch, channels, height, width = x.shape
    return not gated and channels <= DEFAULT_K and batch * height * width >= DEFAULT_ROWS and out_channels >= 16


def pointwise_streaming(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *, act: bool,
                        gate: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                        tiles: tuple[int, int, int, int, int] | None = None, programs: int | None = None
                        ) -> torch.Tensor:
    """`kernels.pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual, gate_weights=False)` for up
    to `MAX_K` input channels.

    `x` is NCHW-shaped with channels-last memory, `weight_t` the weights laid out (in, out), `gate` (N, in)
    float32 scales the input channels per image, `residual` (N, out, H, W, channels-last) is added after the
    activation. `tiles` = (BLOCK_M, BLOCK_N, num_warps, num_stages, programs_per_sm) overrides the tile
    choice; the grid has `programs` persistent programs along M (default programs_per_sm x the SM count, or
    `INTERPRET_PROGRAMS` under the interpreter; never more than there are row tiles) for each block of
    BLOCK_N output channels. With a gate, BLOCK_M must not exceed the pixels of an image.
    """
    batch, channels, height, width = x.shape
    if channels > MAX_K:
        raise ValueError(f"pointwise_streaming holds at most {MAX_K} input channels in one tile, got {channels}; "
                         "use kernels.pointwise")
    out_channels = weight_t.shape[1]
    rows = batch * height * width
    out, a, o, r = matrix_views(x, out_channels, residual)
    block_k = _pow2(channels, 16, MAX_K)
    block_m, block_n, warps, stages, per_sm = tiles if tiles is not None else _streaming_tiles(block_k, out_channels)
    if gate is not None and block_m > height * width:
        raise ValueError(f"pointwise_streaming with a gate takes tiles of at most one image's {height * width} "
                         f"pixels, got {block_m} rows; use kernels.pointwise")
    if programs is None:
        programs = (INTERPRET_PROGRAMS if INTERPRET
                    else per_sm * torch.cuda.get_device_properties(x.device).multi_processor_count)
    grid = (min(programs, cdiv(rows, block_m)), cdiv(out_channels, block_n))
    _streaming_kernel[grid](a, weight_t, bias, gate if gate is not None else bias, r, o, rows, out_channels, channels,
                            height * width, a.stride(0), a.stride(1), weight_t.stride(0), weight_t.stride(1),
                            o.stride(0), o.stride(1), r.stride(0), r.stride(1), GATE=gate is not None,
                            ACT=act_mode(act, out), RESIDUAL=residual is not None, IEEE=x.dtype == torch.float32,
                            ALIGN=alignment(a.stride(0), weight_t.stride(0), o.stride(0), r.stride(0)),
                            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                            **({} if INTERPRET else {"num_warps": warps, "num_stages": stages}))
    return out
