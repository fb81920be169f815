"""A fused training MBConv's last step in one pass: bn3's affine map, stochastic depth and the residual.

The projection hands over its raw output y with bn3's batch statistics; the block's output is then

    out = (y * scale + shift) * keep[n] + shortcut

(`keep` (N,) is stochastic depth's per-image draw, 0 or 1 / survival, as `torchvision.ops.StochasticDepth`
makes it; no `keep` in evaluation or at rate 0, no shortcut where the block has no residual). In PyTorch that is
four passes over the block's output, through a float32 temporary (the affine map, the cast to y's dtype, the
draw's product, the sum), and the backward six more with two reductions over the batch; in eager mode a dozen
launches per block. Here one kernel writes `out` and one writes y's gradient, g * keep[n] * scale with g the
output's gradient, with the partial sums of dscale and dshift (g * keep * y and g * keep, one row of each per
program, added up by PyTorch in order: deterministic). The shortcut's gradient is g itself.

The Triton path runs where the fused convolutions do (a GPU or TRITON_INTERPRET, channels-last maps) and
no graph is being traced; under `torch.compile` the composite `block_output_reference` runs instead, which
Inductor fuses on its own. Both round once, to y's dtype, where the composite in eager PyTorch rounds after
each step; in float32 they agree to rounding.
"""
from __future__ import annotations

import torch

from effnet.fast import kernels
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple

    @triton.jit
    def _output_kernel(y_ptr, scale_ptr, shift_ptr, keep_ptr, res_ptr, out_ptr, M, C, pixels,
                       KEEP: tl.constexpr, RESIDUAL: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_C: tl.constexpr):
        # One program: BLOCK_M rows (pixels) x BLOCK_C channels of the (M, C) channels-last matrices.
        C = _multiple(C, ALIGN)
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        ok = (rm < M)[:, None] & c_ok[None, :]
        offsets = rm[:, None] * C + c[None, :]
        scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)
        shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)
        z = tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
        if KEEP:
            z = z * tl.load(keep_ptr + rm // pixels, mask=rm < M, other=0.0).to(tl.float32)[:, None]
        if RESIDUAL:
            z += tl.load(res_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, z.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _output_backward_kernel(dout_ptr, y_ptr, scale_ptr, keep_ptr, dy_ptr, partial_ptr, M, C, pixels,
                                rows_per_program, KEEP: tl.constexpr, DY: tl.constexpr, ALIGN: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: rows [chunk * rows_per_program, ...) x BLOCK_C channels. It writes dy = g * keep * scale
        # there (with DY) and the sums of g * keep * y and of g * keep to row `chunk` of the (chunks, 2, C)
        # partial sums.
        C = _multiple(C, ALIGN)
        chunk = tl.program_id(0)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)
        start = chunk * rows_per_program
        end = tl.minimum(start + rows_per_program, M)
        dscale = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        dshift = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        for m0 in range(start, end, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            ok = (rm < end)[:, None] & c_ok[None, :]
            offsets = rm[:, None] * C + c[None, :]
            g = tl.load(dout_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
            if KEEP:
                g = g * tl.load(keep_ptr + rm // pixels, mask=rm < end, other=0.0).to(tl.float32)[:, None]
            if DY:
                tl.store(dy_ptr + offsets, (g * scale[None, :]).to(dy_ptr.dtype.element_ty), mask=ok)
            dscale += g * tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
            dshift += g
        tl.store(partial_ptr + chunk * 2 * C + c, tl.sum(dscale, axis=0), mask=c_ok)
        tl.store(partial_ptr + chunk * 2 * C + C + c, tl.sum(dshift, axis=0), mask=c_ok)


_TILE = 4096  # values per tile (BLOCK_M x BLOCK_C) of the forward, 2048 of the backward (two accumulators)
_WARPS = 4
_PROGRAMS_PER_SM = 8  # the backward's programs (row chunks x channel blocks): a full wave, 4+ row tiles each
_MIN_TILES = 4


def _tiles(channels: int, values: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_C): every channel of a row in one tile up to 128, as many rows as fill `values`."""
    block_c = kernels._pow2(channels, 16, 128)
    return max(16, values // block_c), block_c


def _rows_per_program(rows: int, block_m: int, channel_blocks: int, device: torch.device) -> int:
    """The backward's rows per program: whole row tiles, about `_PROGRAMS_PER_SM` programs per multiprocessor
    in all (a few under the interpreter), at least `_MIN_TILES` tiles each."""
    programs = 4 if INTERPRET else _PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    chunks = max(1, min(triton.cdiv(rows, _MIN_TILES * block_m), triton.cdiv(programs, channel_blocks)))
    return triton.cdiv(triton.cdiv(rows, chunks), block_m) * block_m


class _BlockOutput(torch.autograd.Function):
    """`block_output` through the two kernels (module docstring)."""

    @staticmethod
    def forward(ctx, y, scale, shift, keep, shortcut):  # noqa: D102 - see the class
        batch, channels, height, width = y.shape
        out = channels_last_empty(y, tuple(y.shape))
        block_m, block_c = _tiles(channels, _TILE)
        rows = batch * height * width
        maps = (y, out) if shortcut is None else (y, out, shortcut)
        _output_kernel[(triton.cdiv(rows, block_m), triton.cdiv(channels, block_c))](
            y, scale, shift, keep if keep is not None else scale, shortcut if shortcut is not None else y, out,
            rows, channels, height * width, KEEP=keep is not None, RESIDUAL=shortcut is not None,
            ALIGN=kernels.map_alignment(*maps), BLOCK_M=block_m, BLOCK_C=block_c,
            **({} if INTERPRET else {"num_warps": _WARPS}))
        ctx.save_for_backward(y, scale, keep)
        ctx.has_keep, ctx.has_shortcut = keep is not None, shortcut is not None
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: D102 - see the class
        y, scale, keep = ctx.saved_tensors
        batch, channels, height, width = y.shape
        dout = dout.to(y.dtype).contiguous(memory_format=torch.channels_last)
        need_dy = ctx.needs_input_grad[0]
        dy = channels_last_empty(y, tuple(y.shape)) if need_dy else y
        block_m, block_c = _tiles(channels, _TILE // 2)
        rows = batch * height * width
        channel_blocks = triton.cdiv(channels, block_c)
        per_program = _rows_per_program(rows, block_m, channel_blocks, y.device)
        chunks = triton.cdiv(rows, per_program)
        partial = torch.empty((chunks, 2 * channels), device=y.device, dtype=torch.float32)
        _output_backward_kernel[(chunks, channel_blocks)](
            dout, y, scale, keep if ctx.has_keep else scale, dy, partial, rows, channels, height * width,
            per_program, KEEP=ctx.has_keep, DY=need_dy, ALIGN=kernels.map_alignment(dout, y),
            BLOCK_M=block_m, BLOCK_C=block_c, **({} if INTERPRET else {"num_warps": _WARPS}))
        sums = partial.sum(0)
        return dy if need_dy else None, sums[:channels], sums[channels:], None, dout if ctx.has_shortcut else None


def block_output_reference(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, keep: torch.Tensor | None = None,
                           shortcut: torch.Tensor | None = None) -> torch.Tensor:
    """`block_output` in PyTorch: the affine map in float32, cast to y's dtype, then the draw and the residual
    in that dtype (as the plain block computes them)."""
    out = torch.addcmul(shift[None, :, None, None], y, scale[None, :, None, None]).to(y.dtype)
    if keep is not None:
        out = out * keep.reshape(-1, 1, 1, 1)
    return out + shortcut if shortcut is not None else out


def block_output(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, keep: torch.Tensor | None = None,
                 shortcut: torch.Tensor | None = None) -> torch.Tensor:
    """(y * scale + shift) * keep[n] + shortcut in y's dtype: a training MBConv's output from its projection's
    raw output y (N, C, H, W), bn3 as an affine map (`scale`, `shift` (C,) float32), stochastic depth's draw
    `keep` (N,) (None: every image kept) and the block's input `shortcut` (None: no residual). Differentiable
    in y, scale, shift and shortcut (not keep)."""
    maps = (y,) if shortcut is None else (y, shortcut)
    if (kernels.usable(y) and not torch.compiler.is_compiling() and scale.dtype == shift.dtype == torch.float32
            and y.dtype in (torch.float32, torch.bfloat16, torch.float16) and y.dim() == 4
            and all(t.is_contiguous(memory_format=torch.channels_last) for t in maps)
            and (shortcut is None or (shortcut.shape == y.shape and shortcut.dtype == y.dtype))):
        return _BlockOutput.apply(y, scale.contiguous(), shift.contiguous(),
                                  keep.float().contiguous() if keep is not None else None, shortcut)
    return block_output_reference(y, scale, shift, keep, shortcut)
