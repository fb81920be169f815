"""An expansion's training 1x1 conv through the library's matrix products (tuning kernel `blas` for the
`bn_pointwise` passes of a layer whose input is not normalised).

An MBConv's expansion takes the block's input as it is (no batch norm, SiLU or gate before it), so its raw
output is linear in x: y = x W^T. Every quantity the fused passes gather from y then follows from the moments
of the narrow x. With n rows (pixels of the batch), mu the mean of x's rows and C their biased covariance
(in, in), and a = dmean / n, b = 2 dvar / n per output channel (`bn_stats.gradient_stats`: the gradient
reaching y is g = dy + a + b (y - mean(y))):

    mean(y) = W mu                       var(y) = diag(W C W^T)
    dW = dy^T x + n a mu^T + n diag(b) W C
    dx = dy W + x (W^T diag(b) W) + (a - b mean(y)) W

So each pass is one library product over the wide tensor, as cuDNN's bare convolution makes them: the
forward writes y, each gradient reads dy once, y is never read back and no per-tile partial sums of y are
merged. mu and C take one more read of the narrow x (a product of x with itself, (in, in)). The statistics
are those of the exact product (the Triton passes' are of y rounded to its dtype): the two agree within that
rounding. C is formed as E[x x^T] - mu mu^T, accumulated in float32: its error grows with mu^2 / var of x's
channels (a block's input is a batch norm's output plus a residual: of order one).

Run 8's profile (benchmarks/RESULTS.md) timed B0's fused 1x1 training passes at 10.7 ms per step of batch 128
and the plain model's cuDNN 1x1 convolutions at 4.3 ms. `benchmarks/bn_pointwise_sweep.py` times this form per
expansion layer ("blas") beside the Triton tiles and records it where it wins; never a default. The same
functions on any device (BLAS on a CPU).
"""
from __future__ import annotations

import contextlib
import functools

import torch

from effnet.fast.custom_ops import channels_last_empty, pixel_rows

# The row chunks of a product summed over the rows (x^T x, dy^T x): at most this many (enough programs for a
# GPU's multiprocessors where the product's own tiles are few), and few enough that the chunks' float32
# partial products stay under an eighth of the bytes the product reads.
_MAX_CHUNKS = 256
# PyTorch's half products with a float32 result (`out_dtype`, CUDA only; PyTorch 2.8 on): whether to try them
# (a refusal turns them off for the process)
_out_dtype = hasattr(torch.ops.aten.mm, "dtype") and hasattr(torch.ops.aten.bmm, "dtype")


def without_autocast(function):
    """`function` with autocast off on its first argument's device: autocast reaches into a custom operator's
    implementation, where it would round the float32 moments' products (mm, mv, addr) to 16 bits."""
    @functools.wraps(function)
    def run(x, *args):
        device = x.device.type
        with torch.autocast(device, enabled=False) if device in ("cuda", "cpu") else contextlib.nullcontext():
            return function(x, *args)
    return run


def applies(scale: torch.Tensor | None, gate: torch.Tensor | None, act: bool) -> bool:
    """Whether a `bn_pointwise` layer's input is taken as it is (no affine map, SiLU or gate): y linear in x."""
    return scale is None and gate is None and not act


def _chunks(rows: int, channels: int, element_size: int) -> int:
    """How many equal chunks a sum of products over `rows` rows is split into: the most that divides `rows`,
    at most `_MAX_CHUNKS`, with the (chunks, P, channels) float32 partials under an eighth of the rows read."""
    wanted = max(1, min(_MAX_CHUNKS, rows * element_size // (32 * channels)))
    return next(c for c in range(wanted, 0, -1) if rows % c == 0)


def _product32(p: torch.Tensor, q: torch.Tensor, batched: bool) -> torch.Tensor:
    """p @ q in float32 (`torch.bmm` with `batched`, else `torch.mm`): half inputs with a float32 result on a
    GPU (the product's own float32 accumulator, no rounding to the inputs' dtype), else on float32 copies."""
    global _out_dtype
    product = torch.bmm if batched else torch.mm
    if p.dtype == torch.float32:
        return product(p, q)
    if p.is_cuda and _out_dtype:
        try:
            return product(p, q, out_dtype=torch.float32)
        except RuntimeError:  # a PyTorch or cuBLAS without this case for these inputs
            _out_dtype = False
    return product(p.float(), q.float())


def sum_of_products(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """p^T q (P, K) float32 for (rows, P) `p` and (rows, K) `q`: one product, or a batch of products over
    equal chunks of the rows (`_chunks`) summed after."""
    rows = p.shape[0]
    chunks = _chunks(rows, q.shape[1], q.element_size())
    if chunks == 1:
        return _product32(p.t(), q, batched=False)
    per = rows // chunks
    return _product32(p.view(chunks, per, -1).transpose(1, 2), q.view(chunks, per, -1), batched=True).sum(0)


@without_autocast
def input_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (in,), C (in, in)), float32: the mean of channels-last x's pixels and their biased covariance."""
    a = pixel_rows(x)
    rows = a.shape[0]
    mu = a.sum(0, dtype=torch.float32) / rows
    return mu, torch.addr(sum_of_products(a, a), mu, mu, beta=1 / rows, alpha=-1)  # E[x x^T] - mu mu^T


@without_autocast
def forward(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var) as `bn_pointwise._forward` gives them for an input taken as it is: y = conv1x1(x) by
    `weight` (out, in) in x's dtype, channels-last; y's float32 batch mean and biased variance per channel."""
    batch, _, height, width = x.shape
    y = channels_last_empty(x, (batch, weight.shape[0], height, width))
    torch.mm(pixel_rows(x), weight.t(), out=pixel_rows(y))
    mu, cov = input_moments(x)
    w = weight.float()
    return y, w @ mu, ((w @ cov) * w).sum(1).clamp_min_(0)


@without_autocast
def input_grad(dy: torch.Tensor, stats: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dx, channels-last in x's dtype: the gradient of `forward`'s x given dy and `stats` (3, out) float32,
    (dmean / n, 2 dvar / n, mean) as `bn_stats.gradient_stats` makes it."""
    a, b, mean = stats
    w = weight.float()
    folded = w.t() @ (b[:, None] * w)  # (in, in): W^T diag(b) W
    constant = (a - b * mean) @ w  # (in,)
    dx = channels_last_empty(x, tuple(x.shape))
    rows = pixel_rows(dx)
    torch.addmm(constant.to(x.dtype), pixel_rows(x), folded.to(x.dtype), out=rows)  # x W^T diag(b) W + constant
    rows.addmm_(pixel_rows(dy.contiguous(memory_format=torch.channels_last)), weight)  # + dy W
    return dx


@without_autocast
def weight_grad(dy: torch.Tensor, stats: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dweight (out, in) float32: the gradient of `forward`'s weight given dy and `stats` as in `input_grad`."""
    a, b, _ = stats
    rows = x.numel() // x.shape[1]
    mu, cov = input_moments(x)
    g = pixel_rows(dy.contiguous(memory_format=torch.channels_last))
    correction = torch.addr(b[:, None] * (weight.float() @ cov), a, mu, alpha=1, beta=1)  # a mu^T + diag(b) W C
    return sum_of_products(g, pixel_rows(x)).add_(correction, alpha=rows)
