"""The backward of a per-channel affine map, an optional SiLU and per-image factors, on channels-last maps.

    s = act(x * scale + shift)                      (act: SiLU or none)
    out = s * keep[n] * gate[n, c]                  (keep: a factor per image; gate: per image and channel)

From out's gradient g, one kernel writes x's gradient dz * scale, where dz = (g * keep[n] * gate[n, c] +
pool[n, c]) * act'(z) and z = x * scale + shift (pool: a gradient reaching s at every pixel of its image from
another consumer of s, an average pool's), with one row per program of the partial sums of dz * x and of dz
(the gradients of scale and shift, added up by PyTorch in order: deterministic). Three callers: a fused
training block's output (`block_output`: bn3 and stochastic depth, no activation), the depthwise conv's cuDNN
input gradient (`bn_depthwise_cudnn`: bn1 and its SiLU, on the gradient cuDNN hands over) and a projection's
library form (`projection_blas`: bn2, its SiLU, the SE gate and its pool's gradient, on the product's).
"""
from __future__ import annotations

import torch

from effnet.fast import kernels
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple, _sigmoid

    @triton.jit
    def _affine_grad_kernel(g_ptr, x_ptr, scale_ptr, shift_ptr, keep_ptr, gate_ptr, pool_ptr, dx_ptr, partial_ptr,
                            M, C, pixels, rows_per_program, ACT: tl.constexpr, KEEP: tl.constexpr,
                            GATE: tl.constexpr, POOL: tl.constexpr, DX: tl.constexpr, ALIGN: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: rows [chunk * rows_per_program, ...) x BLOCK_C channels of the (M, C) channels-last
        # matrices. It writes dx = dz * scale there (with DX) and the sums of dz * x and of dz to row `chunk` of
        # the (chunks, 2, C) partial sums.
        C = _multiple(C, ALIGN)
        chunk = tl.program_id(0)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)
        shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)
        start = chunk * rows_per_program
        end = tl.minimum(start + rows_per_program, M)
        dscale = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        dshift = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        for m0 in range(start, end, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            ok = (rm < end)[:, None] & c_ok[None, :]
            offsets = rm[:, None] * C + c[None, :]
            dz = tl.load(g_ptr + offsets, mask=ok, other=0.0).to(tl.float32)  # 0 where masked, whatever follows
            if KEEP:
                dz = dz * tl.load(keep_ptr + rm // pixels, mask=rm < end, other=0.0).to(tl.float32)[:, None]
            if GATE or POOL:  # (N, C) float32 tables, a row per image
                per_image = (rm // pixels)[:, None] * C + c[None, :]
                if GATE:
                    dz = dz * tl.load(gate_ptr + per_image, mask=ok, other=0.0)
                if POOL:
                    dz = dz + tl.load(pool_ptr + per_image, mask=ok, other=0.0)
            x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
            if ACT:
                z = x * scale[None, :] + shift[None, :]
                sig = _sigmoid(z, ACT)
                dz = dz * (sig * (1.0 + z * (1.0 - sig)))
            if DX:
                tl.store(dx_ptr + offsets, (dz * scale[None, :]).to(dx_ptr.dtype.element_ty), mask=ok)
            dscale += dz * x
            dshift += dz
        tl.store(partial_ptr + chunk * 2 * C + c, tl.sum(dscale, axis=0), mask=c_ok)
        tl.store(partial_ptr + chunk * 2 * C + C + c, tl.sum(dshift, axis=0), mask=c_ok)


TILE = 2048  # values per (BLOCK_M, BLOCK_C) tile: two float32 accumulators of it
WARPS = 4
_PROGRAMS_PER_SM = 8  # programs (row chunks x channel blocks) in all: a full wave, `_MIN_TILES` row tiles each
_MIN_TILES = 4


def row_tiles(channels: int, values: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_C) of an element-wise pass over (rows, channels): every channel of a row in one tile up
    to 128, as many rows as fill `values`."""
    block_c = kernels._pow2(channels, 16, 128)
    return max(16, values // block_c), block_c


def _rows_per_program(rows: int, block_m: int, channel_blocks: int, device: torch.device) -> int:
    """Rows per program: whole row tiles, about `_PROGRAMS_PER_SM` programs per multiprocessor in all (a few
    under the interpreter), at least `_MIN_TILES` tiles each."""
    programs = 4 if INTERPRET else _PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    chunks = max(1, min(cdiv(rows, _MIN_TILES * block_m), cdiv(programs, channel_blocks)))
    return cdiv(cdiv(rows, chunks), block_m) * block_m


def affine_grad(g: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None,
                keep: torch.Tensor | None = None, act: bool = False, need_dx: bool = True,
                gate: torch.Tensor | None = None,
                pool: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(dx, daffine) of out = act(x * scale + shift) * keep[n] * gate[n, c] from out's gradient g, plus `pool`
    [n, c] reaching the activation at every pixel of image n (module docstring): dx in x's dtype (None without
    `need_dx`), daffine (2, C) float32 the rows dscale and dshift (one reduction for both). g and x are
    channels-last (N, C, H, W) maps of one shape; scale and shift (C,) float32 (shift is read only with `act`); keep
    (N,) float32 or None; gate and pool (N, C) float32 or None; act: SiLU (its sigmoid on the tanh instruction where
    `kernels.act_mode` says so, as the forward's)."""
    batch, channels, height, width = x.shape
    dx = channels_last_empty(x, tuple(x.shape)) if need_dx else None
    block_m, block_c = row_tiles(channels, TILE)
    rows = batch * height * width
    channel_blocks = cdiv(channels, block_c)
    per_program = _rows_per_program(rows, block_m, channel_blocks, x.device)
    chunks = cdiv(rows, per_program)
    partial = torch.empty((chunks, 2 * channels), device=x.device, dtype=torch.float32)
    _affine_grad_kernel[(chunks, channel_blocks)](
        g, x, scale, shift if shift is not None else scale, keep if keep is not None else scale,
        gate.contiguous() if gate is not None else scale, pool.contiguous() if pool is not None else scale,
        dx if need_dx else x, partial, rows, channels, height * width, per_program, ACT=kernels.act_mode(act, x),
        KEEP=keep is not None, GATE=gate is not None, POOL=pool is not None, DX=need_dx,
        ALIGN=kernels.map_alignment(g, x), BLOCK_M=block_m, BLOCK_C=block_c,
        **({} if INTERPRET else {"num_warps": WARPS}))
    return dx, partial.sum(0).view(2, channels)
