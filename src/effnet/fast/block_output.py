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
from effnet.fast.affine_grad import WARPS, affine_grad, row_tiles
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple, _row_tile

    @triton.jit
    def _output_kernel(y_ptr, scale_ptr, shift_ptr, keep_ptr, res_ptr, out_ptr, M, C, pixels,
                       KEEP: tl.constexpr, RESIDUAL: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_C: tl.constexpr):
        # One program: BLOCK_M rows (pixels) x BLOCK_C channels of the (M, C) channels-last matrices.
        C = _multiple(C, ALIGN)
        rm, c, c_ok, ok, offsets = _row_tile(M, C, BLOCK_M, BLOCK_C)
        scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)
        shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)
        z = tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
        if KEEP:
            z = z * tl.load(keep_ptr + rm // pixels, mask=rm < M, other=0.0).to(tl.float32)[:, None]
        if RESIDUAL:
            z += tl.load(res_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, z.to(out_ptr.dtype.element_ty), mask=ok)


_TILE = 4096  # values per (BLOCK_M, BLOCK_C) tile of the forward (the backward's: `affine_grad`)


class _BlockOutput(torch.autograd.Function):
    """`block_output` through the two kernels (module docstring)."""

    @staticmethod
    def forward(ctx, y, scale, shift, keep, shortcut):  # noqa: D102 - see the class
        batch, channels, height, width = y.shape
        out = channels_last_empty(y, tuple(y.shape))
        block_m, block_c = row_tiles(channels, _TILE)
        rows = batch * height * width
        maps = (y, out) if shortcut is None else (y, out, shortcut)
        _output_kernel[(cdiv(rows, block_m), cdiv(channels, block_c))](
            y, scale, shift, keep if keep is not None else scale, shortcut if shortcut is not None else y, out,
            rows, channels, height * width, KEEP=keep is not None, RESIDUAL=shortcut is not None,
            ALIGN=kernels.map_alignment(*maps), BLOCK_M=block_m, BLOCK_C=block_c,
            **({} if INTERPRET else {"num_warps": WARPS}))
        ctx.save_for_backward(y, scale, keep)
        ctx.has_shortcut = shortcut is not None
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: D102 - see the class
        y, scale, keep = ctx.saved_tensors
        dout = dout.to(y.dtype).contiguous(memory_format=torch.channels_last)
        dy, daffine = affine_grad(dout, y, scale, keep=keep, need_dx=ctx.needs_input_grad[0])
        return dy, daffine[0], daffine[1], None, dout if ctx.has_shortcut else None


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
