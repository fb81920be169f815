"""An MBConv's squeeze-excitation and projection as one training operator (experimental).

In the fused training MBConv the depthwise conv's raw output x (before `bn2`) has two consumers:
the squeeze-excitation, which pools s = silu(x * scale + shift) over each image, and the projection,
which convolves s * gate (`bn_pointwise` applies bn2, the SiLU and the gate as it loads x). As two
autograd nodes, the pool's backward would write a full-size gradient for x (the SiLU's derivative at
every pixel) and autograd would read it again to add it to the projection's; eager PyTorch also
pools through float32 temporaries. One operator takes both:

    pooled = mean over pixels of s                    (one read of x: `_se_pool_kernel`)
    gate = sigmoid(expand(silu(reduce(pooled))))      ((N, C) float32: `effnet.fast.excitation`, one launch)
    y, mean, var = bn_pointwise(x, weight, scale, shift, gate, act=True)

and its backward needs no pass of its own for the pool: the 1x1 weight gradient's pass also gives
dgate (per image, the product g.T @ s it makes anyway, summed against the weight), the SE's backward
turns dgate into dpooled on (N, C) values (two launches, the SE's weight gradients with it; in PyTorch about
twenty small kernels), and the 1x1 input gradient adds dpooled / pixels to the
activation's gradient as it applies the SiLU's derivative in its epilogue, summing dscale and dshift
with the pool's share included. The pool's gradient is never written.

`se_projection` is differentiable in every tensor, through PyTorch custom operators (so
`torch.compile` traces it). It runs the Triton kernels where `bn_pointwise` does, and the same
function in plain PyTorch elsewhere (`se_projection_reference`, whose SE runs its linear layers in x's dtype,
as autocast runs the plain block's; the Triton path's in float32, its products on TF32 where x is 16-bit). The
squeeze-excitation is EfficientNet's: a SiLU between its two biased 1x1 convs, a sigmoid gate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.fast import bn_pointwise as bnp
from effnet.fast import bn_stats, kernels, projection_blas
from effnet.fast.custom_ops import channels_last_empty, pixel_rows
from effnet.fast.excitation import excitation, excitation_backward
from effnet.fast.grids import cdiv, image_chunks
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.bn_pointwise_kernels import _image_chunk, _prologue
    from effnet.fast.kernels import _multiple

    @triton.jit
    def _se_pool_kernel(x_ptr, scale_ptr, shift_ptr, sums_ptr, pixels, K, rows_per_program, s_xm, s_xk, inv_pixels,
                        ACT: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        # One program: rows_per_program pixels of one image (`_image_chunk`) x BLOCK_K channels; the sum of
        # silu(x * scale + shift) over them, times inv_pixels, goes to row `chunk` of the (chunks, K) buffer.
        K, s_xm = _multiple(K, ALIGN), _multiple(s_xm, ALIGN)
        chunk = tl.program_id(0)
        k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < K
        image, start, end = _image_chunk(chunk, pixels, rows_per_program)
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for m0 in range(start, end, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            ok = (rm < end)[:, None] & k_ok[None, :]
            x = tl.load(x_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, mask=ok, other=0.0)
            _, s, _, _ = _prologue(x, k, k_ok, scale_ptr, shift_ptr, scale_ptr, image, K, True, ACT, False)
            acc += tl.where(ok, s, 0.0)
        tl.store(sums_ptr + chunk * K + k, tl.sum(acc, axis=0) * inv_pixels, mask=k_ok)


_POOL_TILES = (32, 64, 4)  # (BLOCK_M, BLOCK_K, num_warps): first guesses, untimed


def _pool(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(N, C) float32: the mean over each image's pixels of silu(x * scale + shift)."""
    batch, channels, height, width = x.shape
    pixels = height * width
    block_m, block_k, warps = _POOL_TILES
    rows_per_program = image_chunks(batch, pixels, block_m, 4 if INTERPRET else 1024)
    chunks = batch * cdiv(pixels, rows_per_program)
    sums = torch.empty((chunks, channels), device=x.device, dtype=torch.float32)
    a = pixel_rows(x)
    _se_pool_kernel[(chunks, cdiv(channels, block_k))](
        a, scale, shift, sums, pixels, channels, rows_per_program, a.stride(0), a.stride(1), 1.0 / pixels,
        ACT=kernels.act_mode(True, x), ALIGN=kernels.alignment(a.stride(0)), BLOCK_M=block_m, BLOCK_K=block_k,
        **({} if INTERPRET else {"num_warps": warps}))
    # each chunk's share of its image's mean, added up (one launch; none where an image is one chunk)
    return sums if chunks == batch else sums.view(batch, -1, channels).sum(1)


def _linear(t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A linear layer of the SE run in `dtype` (the activations' dtype: as autocast runs the plain block's
    SE), its result in float32."""
    return F.linear(t.to(dtype), weight.to(dtype), bias.to(dtype)).float()


def _excite(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, dtype: torch.dtype) -> torch.Tensor:
    """The gate (N, C) float32: EfficientNet's squeeze-excitation of pooled (N, C)."""
    hidden = _linear(pooled, reduce_weight, reduce_bias, dtype)
    return torch.sigmoid(_linear(F.silu(hidden), expand_weight, expand_bias, dtype))


def _half(x: torch.Tensor) -> bool:
    """Whether x is 16-bit: its SE's products then take TF32 (`effnet.fast.excitation`), as the plain block's
    autocast takes them in 16 bits."""
    return x.dtype in (torch.bfloat16, torch.float16)


def _se_weights(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The SE's weights and biases as the Triton excitation takes them: float32, contiguous."""
    return [t.float().contiguous() for t in tensors]


def _forward(x, weight, scale, shift, reduce_weight, reduce_bias, expand_weight, expand_bias, tiles=None):
    """(y, mean, var, pooled, gate). `tiles` overrides the 1x1 kernels' tiles (for the sweep). The gate comes
    from one Triton launch in float32 (`effnet.fast.excitation`; TF32 products for 16-bit x), where the
    composite runs the SE's linear layers in x's dtype as autocast does (four to six launches, each a few
    microseconds)."""
    with torch.autocast(x.device.type, enabled=False):  # the dtypes chosen here, whatever the caller's autocast
        pooled = _pool(x, scale, shift)
        gate = excitation(pooled, 1, *_se_weights(reduce_weight, reduce_bias, expand_weight, expand_bias),
                          tf32=_half(x))
        return (*bnp._forward(x, weight, scale, shift, gate, True, tiles), pooled, gate)


def _backward(dy, stats, x, y, weight, scale, shift, pooled, gate, reduce_weight, reduce_bias, expand_weight,
              need_dx: bool, tiles=None, weight_tiles=None):
    """(dx, dweight, daffine, dreduce_weight, dreduce_bias, dexpand_weight, dexpand_bias), daffine (2, C): dscale
    and dshift; dx and daffine empty without `need_dx`. `stats`, `tiles` and `weight_tiles` as in
    `bn_pointwise._backward`."""
    with torch.autocast(x.device.type, enabled=False):
        products = projection_blas.Products(dy, stats, y, weight, x)  # made only if a pass takes the library form
        dw, dgate = bnp._weight_grad(dy, stats, x, y, weight, scale, shift, gate, True, weight_tiles,
                                     products=products)
        # the pool's gradient reaches each of its pixels divided by their count
        dpool, *dse = excitation_backward(dgate, gate, pooled, *_se_weights(reduce_weight, reduce_bias, expand_weight),
                                          dpooled_scale=1.0 / (x.shape[2] * x.shape[3]), tf32=_half(x))
        dx, daffine = (dw.new_empty((0,)) for _ in range(2))
        if need_dx:
            dx, daffine = bnp._input_grad(dy, stats, x, y, weight, scale, shift, gate, True, pool=dpool,
                                          tiles=tiles, products=products)
        return (dx, dw, daffine, *dse)


# The projection's weight enters as the parameter is and leaves as the copy the kernels use, as in
# `bn_pointwise`'s operator (one cast a step, the gradient in the parameter's dtype).
@torch.library.custom_op("effnet::se_projection", mutates_args=())
def _forward_op(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                reduce_weight: torch.Tensor, reduce_bias: torch.Tensor, expand_weight: torch.Tensor,
                expand_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor, torch.Tensor]:
    kernel_weight, returned = bnp.cast_output(weight, x)
    return (*_forward(x, kernel_weight, scale, shift, reduce_weight, reduce_bias, expand_weight, expand_bias),
            returned)


@_forward_op.register_fake
def _(x, weight, scale, shift, reduce_weight, reduce_bias, expand_weight, expand_bias):
    mean = x.new_empty((weight.shape[0],), dtype=torch.float32)
    pooled = x.new_empty(tuple(x.shape[:2]), dtype=torch.float32)
    return (channels_last_empty(x, (x.shape[0], weight.shape[0], *x.shape[2:])), mean, torch.empty_like(mean),
            pooled, torch.empty_like(pooled), x.new_empty(tuple(weight.shape) if bnp.casts(weight, x) else (0,)))


@torch.library.custom_op("effnet::se_projection_backward", mutates_args=())
def _backward_op(dy: torch.Tensor, stats: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                 scale: torch.Tensor, shift: torch.Tensor, pooled: torch.Tensor, gate: torch.Tensor,
                 reduce_weight: torch.Tensor, reduce_bias: torch.Tensor, expand_weight: torch.Tensor,
                 need_dx: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                         torch.Tensor, torch.Tensor]:
    return _backward(dy, stats, x, y, weight, scale, shift, pooled, gate, reduce_weight, reduce_bias,
                     expand_weight, need_dx)


@_backward_op.register_fake
def _(dy, stats, x, y, weight, scale, shift, pooled, gate, reduce_weight, reduce_bias, expand_weight, need_dx):
    def empty(shape: tuple) -> torch.Tensor:
        return x.new_empty(shape, dtype=torch.float32)

    channels = x.shape[1]
    dx = channels_last_empty(x, tuple(x.shape)) if need_dx else empty((0,))
    daffine = empty((2, channels) if need_dx else (0,))
    return (dx, empty(tuple(weight.shape)), daffine, empty(tuple(reduce_weight.shape)),
            empty((reduce_weight.shape[0],)), empty(tuple(expand_weight.shape)), empty((channels,)))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, scale, shift, reduce_weight, reduce_bias, expand_weight, expand_bias = inputs
    y, mean, _, pooled, gate, cast = output
    ctx.save_for_backward(x, y, mean, cast if bnp.casts(weight, x) else weight, scale, shift, pooled, gate,
                          reduce_weight, reduce_bias, expand_weight, expand_bias)
    ctx.weight_dtype = weight.dtype
    ctx.set_materialize_grads(False)  # pooled and gate get no gradient: not two (N, C) tensors of zeros a step


def _autograd_backward(ctx, dy, dmean, dvar, _, __, ___):
    x, y, mean, weight, scale, shift, pooled, gate, *se = ctx.saved_tensors
    needs = ctx.needs_input_grad
    dy = torch.zeros_like(y) if dy is None else dy.to(y.dtype)
    dx, dw, daffine, *dse = _backward_op(dy, bn_stats.gradient_stats(dmean, dvar, mean, y), x, y, weight, scale,
                                         shift, pooled, gate, *se[:3], needs[0] or needs[2] or needs[3])
    dscale, dshift = daffine if daffine.numel() else (None, None)
    grads = (dx, dw.to(ctx.weight_dtype), dscale, dshift, *(grad.to(p.dtype) for grad, p in zip(dse, se, strict=True)))
    return tuple(grad if need else None for grad, need in zip(grads, needs, strict=True))


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def se_projection_reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                            reduce_weight: torch.Tensor, reduce_bias: torch.Tensor, expand_weight: torch.Tensor,
                            expand_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`se_projection` in plain PyTorch (and what it falls back to): the float32 pool, the SE's linear
    layers in x's dtype, then `bn_pointwise_reference`."""
    pooled = F.silu(x.float() * scale[None, :, None, None] + shift[None, :, None, None]).mean((2, 3))
    gate = _excite(pooled, reduce_weight.flatten(1), reduce_bias, expand_weight.flatten(1), expand_bias, x.dtype)
    return bnp.bn_pointwise_reference(x, weight.flatten(1), scale, shift, gate, act=True)


def se_projection(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                  reduce_weight: torch.Tensor, reduce_bias: torch.Tensor, expand_weight: torch.Tensor,
                  expand_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): `bn_pointwise(x, weight, scale, shift, gate, act=True)` with the gate of EfficientNet's
    squeeze-excitation of s = silu(x * scale + shift) (its 1x1 convs' weights, 2-d or 4-d, and biases), the
    float32 per-channel batch mean and biased variance of y. `x` is the raw channels-last (N, C, H, W)
    input, (`scale`, `shift`) its batch norm as an affine map. Differentiable in every tensor."""
    if not bnp.usable(x):
        return se_projection_reference(x, weight, scale, shift, reduce_weight, reduce_bias, expand_weight,
                                       expand_bias)
    y, mean, var, _, _, _ = _forward_op(x, weight.flatten(1), scale, shift, reduce_weight.flatten(1), reduce_bias,
                                        expand_weight.flatten(1), expand_bias)
    return y, mean, var
