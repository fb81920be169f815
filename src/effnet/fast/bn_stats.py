"""The fused training path's batch-norm arithmetic on (C,) vectors, in a few launches instead of many.

The fused convolutions (`bn_pointwise`, `bn_depthwise`, `se_projection`) leave each batch norm's
statistics as per-block partial sums; what turns them into the next layer's affine map is arithmetic
on small tensors. As PyTorch operators it was about 25 launches per batch norm and training step
(merging the blocks, the affine map, the running statistics, and their backward), some 1,300 small
kernels in a B0 step: run 6 measured that step's eager wall time at 4x its kernels' time (180 ms
against 44, batch 128, H100), and PyTorch's small reductions and element-wise kernels at 6.5 ms of
those 44. Here each of these is one or two Triton launches:

- `merge_moments`: the blocks' (count, sum, sum of squared deviations) merged into the batch mean and
  biased variance (Chan et al.'s pairwise update), in two launches: chunks of blocks in parallel,
  then the chunks.
- `batch_norm_train`: a training batch norm as the affine map (scale, shift) from the batch's mean and
  variance, its running statistics updated as `nn.BatchNorm2d` updates them, and the backward from
  (dscale, dshift) to (dmean, dvar, dweight, dbias), one launch each way.
- `gradient_stats`: the rows (dmean / n, 2 dvar / n, mean) the backward kernels read, one launch.

Each takes PyTorch's own operators where the kernels cannot run (no GPU and no TRITON_INTERPRET) and
while `torch.compile` traces (Inductor fuses that arithmetic itself); the results are the same up to
float32 rounding.
"""
from __future__ import annotations

import torch
from torch import nn

from effnet.fast import kernels
from effnet.fast.grids import cdiv, next_power_of_2
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _merge_kernel(sums_ptr, m2_ptr, counts_ptr, out_a_ptr, out_b_ptr, out_counts_ptr, R, C, rows_per_program,
                      FINAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        # Program (chunk, channel block): rows [chunk * rows_per_program, ...) of the (R, C) partials, each row
        # a block's sum and sum of squared deviations from its own mean over counts[row] values, merged into
        # one: (sum, m2) to row `chunk` of out_a, out_b and its count to out_counts, or with FINAL (a single
        # chunk) the mean and the biased variance.
        chunk = tl.program_id(0)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        start = chunk * rows_per_program
        end = tl.minimum(start + rows_per_program, R)
        total = tl.zeros([BLOCK_C], dtype=tl.float32)
        count = tl.sum(tl.zeros([BLOCK_R], dtype=tl.float32), axis=0)
        for r0 in range(start, end, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_ok = r < end
            total += tl.sum(tl.load(sums_ptr + r[:, None] * C + c[None, :], mask=r_ok[:, None] & c_ok[None, :],
                                    other=0.0), axis=0)
            count += tl.sum(tl.load(counts_ptr + r, mask=r_ok, other=0.0), axis=0)
        mean = total / tl.maximum(count, 1.0)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        for r0 in range(start, end, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            r_ok = r < end
            ok = r_ok[:, None] & c_ok[None, :]
            n = tl.load(counts_ptr + r, mask=r_ok, other=0.0)
            s = tl.load(sums_ptr + r[:, None] * C + c[None, :], mask=ok, other=0.0)
            q = tl.load(m2_ptr + r[:, None] * C + c[None, :], mask=ok, other=0.0)
            deviation = tl.where(ok, s / tl.maximum(n, 1.0)[:, None] - mean[None, :], 0.0)
            m2 += tl.sum(q + n[:, None] * deviation * deviation, axis=0)
        if FINAL:
            tl.store(out_a_ptr + c, mean, mask=c_ok)
            tl.store(out_b_ptr + c, m2 / tl.maximum(count, 1.0), mask=c_ok)
        else:
            tl.store(out_a_ptr + chunk * C + c, total, mask=c_ok)
            tl.store(out_b_ptr + chunk * C + c, m2, mask=c_ok)
            tl.store(out_counts_ptr + chunk, count, mask=tl.program_id(1) == 0)

    @triton.jit
    def _affine_kernel(mean_ptr, var_ptr, weight_ptr, bias_ptr, scale_ptr, shift_ptr, running_mean_ptr,
                       running_var_ptr, tracked_ptr, C, eps, momentum, unbias,
                       TRACK: tl.constexpr, BLOCK: tl.constexpr):
        # scale = weight / sqrt(var + eps), shift = bias - mean * scale; with TRACK the running statistics
        # move toward (mean, var * unbias) by `momentum` and program 0 counts the batch.
        c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = c < C
        mean = tl.load(mean_ptr + c, mask=ok, other=0.0)
        var = tl.load(var_ptr + c, mask=ok, other=0.0)
        scale = tl.load(weight_ptr + c, mask=ok, other=0.0) * tl.rsqrt(var + eps)
        tl.store(scale_ptr + c, scale, mask=ok)
        tl.store(shift_ptr + c, tl.load(bias_ptr + c, mask=ok, other=0.0) - mean * scale, mask=ok)
        if TRACK:
            running_mean = tl.load(running_mean_ptr + c, mask=ok, other=0.0)
            running_var = tl.load(running_var_ptr + c, mask=ok, other=0.0)
            tl.store(running_mean_ptr + c, running_mean + momentum * (mean - running_mean), mask=ok)
            tl.store(running_var_ptr + c, running_var + momentum * (var * unbias - running_var), mask=ok)
            first = tl.program_id(0) == 0
            tl.store(tracked_ptr, tl.load(tracked_ptr, mask=first, other=0) + 1, mask=first)

    @triton.jit
    def _affine_backward_kernel(dscale_ptr, dshift_ptr, mean_ptr, var_ptr, weight_ptr, dmean_ptr, dvar_ptr,
                                dweight_ptr, dbias_ptr, C, eps,
                                DSCALE: tl.constexpr, DSHIFT: tl.constexpr, BLOCK: tl.constexpr):
        # The affine map's backward: with r = (var + eps)^-1/2, scale = weight r and shift = bias - mean scale,
        # so d scale (total) = dscale - mean dshift, dweight = that * r, dvar = that * weight * -r^3 / 2,
        # dmean = -scale dshift, dbias = dshift.
        c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = c < C
        mean = tl.load(mean_ptr + c, mask=ok, other=0.0)
        weight = tl.load(weight_ptr + c, mask=ok, other=0.0)
        r = tl.rsqrt(tl.load(var_ptr + c, mask=ok, other=0.0) + eps)
        dshift = tl.load(dshift_ptr + c, mask=ok, other=0.0) if DSHIFT else tl.zeros([BLOCK], dtype=tl.float32)
        dscale = tl.load(dscale_ptr + c, mask=ok, other=0.0) if DSCALE else tl.zeros([BLOCK], dtype=tl.float32)
        dscale = dscale - mean * dshift
        tl.store(dmean_ptr + c, -weight * r * dshift, mask=ok)
        tl.store(dvar_ptr + c, -0.5 * dscale * weight * r * r * r, mask=ok)
        tl.store(dweight_ptr + c, dscale * r, mask=ok)
        tl.store(dbias_ptr + c, dshift, mask=ok)

    @triton.jit
    def _gradient_rows_kernel(dmean_ptr, dvar_ptr, mean_ptr, out_ptr, C, n,
                              DMEAN: tl.constexpr, DVAR: tl.constexpr, BLOCK: tl.constexpr):
        c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = c < C
        zeros = tl.zeros([BLOCK], dtype=tl.float32)
        dmean = tl.load(dmean_ptr + c, mask=ok, other=0.0).to(tl.float32) if DMEAN else zeros
        dvar = tl.load(dvar_ptr + c, mask=ok, other=0.0).to(tl.float32) if DVAR else zeros
        # divided as PyTorch divides (a traced graph computes these rows with its operators)
        tl.store(out_ptr + c, dmean / n, mask=ok)
        tl.store(out_ptr + C + c, 2.0 * dvar / n, mask=ok)
        tl.store(out_ptr + 2 * C + c, tl.load(mean_ptr + c, mask=ok, other=0.0), mask=ok)


def _triton(t: torch.Tensor) -> bool:
    """Whether the kernels take `t` here: a GPU or the interpreter, float32, and no graph being traced (the
    tracers hand autograd formulas fake or functional tensor subclasses, which a kernel cannot read, and a
    kernel's result would be a constant in the graph)."""
    return (type(t) in (torch.Tensor, nn.Parameter) and kernels.usable(t) and t.dtype == torch.float32
            and not torch.compiler.is_compiling())


_VECTOR_BLOCK = 256  # channels per program of the (C,) kernels: one program for any EfficientNet layer up to 256
_MERGE_ROWS = 256  # partial rows per chunk in merge_moments' first launch (at least)


def merge_moments(sums: torch.Tensor, m2: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and biased variance per channel of values gathered in blocks: `sums` and `m2` (blocks, C) hold
    each block's sum and sum of squared deviations from its own mean, `counts` (blocks,) or (blocks, 1) its
    number of values (Chan et al.'s pairwise update)."""
    counts = counts.reshape(-1)
    if not (_triton(sums) and sums.is_contiguous() and m2.is_contiguous()):
        total = counts.sum()
        mean = sums.sum(0) / total
        return mean, (m2.sum(0) + (counts[:, None] * (sums / counts[:, None] - mean).square()).sum(0)) / total
    rows, channels = sums.shape
    block_c = min(64, next_power_of_2(channels))
    block_r = 16 if INTERPRET else 64
    channel_blocks = cdiv(channels, block_c)
    mean, var = (torch.empty((channels,), device=sums.device, dtype=torch.float32) for _ in range(2))  # apart: outputs
    if rows > 2 * _MERGE_ROWS:  # chunks of rows in parallel first, then the chunks in one program per channels
        per_chunk = max(_MERGE_ROWS, cdiv(rows, 512))
        chunks = cdiv(rows, per_chunk)
        chunk_sums, chunk_m2 = torch.empty((2, chunks, channels), device=sums.device, dtype=torch.float32)
        chunk_counts = torch.empty((chunks,), device=sums.device, dtype=torch.float32)
        _merge_kernel[(chunks, channel_blocks)](sums, m2, counts, chunk_sums, chunk_m2, chunk_counts, rows, channels,
                                               per_chunk, FINAL=False, BLOCK_R=block_r, BLOCK_C=block_c)
        sums, m2, counts, rows = chunk_sums, chunk_m2, chunk_counts, chunks
    _merge_kernel[(1, channel_blocks)](sums, m2, counts, mean, var, var, rows, channels, rows,
                                       FINAL=True, BLOCK_R=block_r, BLOCK_C=block_c)
    return mean, var


_counts_cache: dict[tuple, torch.Tensor] = {}


def block_counts(device: torch.device, make, *layout) -> torch.Tensor:
    """The (blocks,) float32 value counts of a partial-sums layout, `make(*layout)` (host-side, any number
    type) made once per layout and device: a layout is fixed by the shapes and tiles it names."""
    key = (make, layout, device)
    cached = _counts_cache.get(key)
    if cached is None:
        if len(_counts_cache) > 256:
            _counts_cache.clear()
        cached = _counts_cache[key] = make(*layout).to(device=device, dtype=torch.float32)
    return cached


def gradient_stats(dmean: torch.Tensor | None, dvar: torch.Tensor | None, mean: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
    """(3, C) float32: dmean / n, 2 dvar / n and mean, what the backward kernels need to form the gradient
    reaching y (n values per channel) from the gradients of its batch mean and variance (None: zero):
    d mean / dy = 1 / n and d var / dy = 2 (y - mean) / n, for every value y of the channel."""
    count = y.numel() // y.shape[1]
    if not _triton(mean):
        zeros = torch.zeros_like(mean)
        return torch.stack([(dmean.float() if dmean is not None else zeros) / count,
                            2.0 * (dvar.float() if dvar is not None else zeros) / count, mean])
    channels = mean.shape[0]
    rows = torch.empty((3, channels), device=mean.device, dtype=torch.float32)
    # autograd may hand over expanded gradients (stride 0: the gradient of a sum), which the kernel cannot read
    _gradient_rows_kernel[(cdiv(channels, _VECTOR_BLOCK),)](
        dmean.contiguous() if dmean is not None else mean, dvar.contiguous() if dvar is not None else mean,
        mean.contiguous(), rows, channels, float(count), DMEAN=dmean is not None, DVAR=dvar is not None,
        BLOCK=_VECTOR_BLOCK)
    return rows


def batch_norm_affine(mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch norm as the affine map (scale, shift), float32, from the batch's mean and biased
    variance (as the fused convolutions return them): normalising y is then y * scale + shift.
    Differentiable (PyTorch operators), so autograd carries the gradients of scale and shift back to mean
    and var (and from there into the producer's backward)."""
    scale = weight.float() * torch.rsqrt(var + eps)
    return scale, bias.float() - mean * scale


class _BatchNormTrain(torch.autograd.Function):
    """`batch_norm_affine` and the running statistics' update in one launch, its backward in another."""

    @staticmethod
    def forward(ctx, mean, var, weight, bias, bn: nn.BatchNorm2d, count: int):  # noqa: D102 - see the class
        channels = mean.shape[0]
        scale, shift = (torch.empty((channels,), device=mean.device, dtype=torch.float32) for _ in range(2))
        track = bn.track_running_stats
        _affine_kernel[(cdiv(channels, _VECTOR_BLOCK),)](
            mean, var, weight, bias, scale, shift, bn.running_mean if track else mean,
            bn.running_var if track else mean, bn.num_batches_tracked if track else mean, channels, bn.eps,
            bn.momentum, count / max(count - 1, 1), TRACK=track, BLOCK=_VECTOR_BLOCK)
        ctx.save_for_backward(mean, var, weight)
        ctx.eps = bn.eps
        return scale, shift

    @staticmethod
    def backward(ctx, dscale, dshift):  # noqa: D102 - see the class
        mean, var, weight = ctx.saved_tensors
        channels = mean.shape[0]
        dmean, dvar, dweight, dbias = (torch.empty((channels,), device=mean.device, dtype=torch.float32)
                                       for _ in range(4))
        _affine_backward_kernel[(cdiv(channels, _VECTOR_BLOCK),)](
            dscale.contiguous() if dscale is not None else mean, dshift.contiguous() if dshift is not None else mean,
            mean, var, weight,
            dmean, dvar, dweight, dbias, channels, ctx.eps, DSCALE=dscale is not None, DSHIFT=dshift is not None,
            BLOCK=_VECTOR_BLOCK)
        return dmean, dvar, dweight, dbias, None, None


def batch_norm_train(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
                     count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bn's (scale, shift) for a batch of `count` values per channel with this mean and biased variance
    (`batch_norm_affine`), and its running statistics updated as nn.BatchNorm2d updates them in training
    (momentum, unbiased variance). Differentiable in mean, var, bn.weight and bn.bias."""
    track = bn.track_running_stats
    if (_triton(mean) and bn.momentum is not None and bn.weight.dtype == bn.bias.dtype == torch.float32
            and (not track or bn.running_mean.dtype == bn.running_var.dtype == torch.float32)):
        return _BatchNormTrain.apply(mean, var, bn.weight, bn.bias, bn, count)
    scale, shift = batch_norm_affine(mean, var, bn.weight, bn.bias, bn.eps)
    if track:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((var * count / max(count - 1, 1)).to(bn.running_var.dtype), momentum)
    return scale, shift
