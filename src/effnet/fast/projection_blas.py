"""A projection's training 1x1 conv through the library's matrix products (tuning kernel `blas` for the
`bn_pointwise` passes of a layer whose input is normalised: the activation written out).

A projection takes the depthwise conv's raw output x and applies bn2, the SiLU and the SE gate as it loads:

    s = act(x * scale + shift)          a = s * gate[n]          y = a W^T

The Triton passes never write `a`; they recompute it in each pass, on every tile of every output block. Run 9's
sweep (an H200, B0 at batch 128, `benchmarks/RESULTS.md`) timed B0's projections at 6.3 ms of the 9.3 its 1x1
passes take a step on their best tiles, against 1.5 ms for cuDNN's bare convolutions of the same shapes: on the
7 x 7 and 14 x 14 maps, 3-9x cuDNN's time, their wide tensors read at 0.2-0.4 TB/s. Here each pass writes the
activation (or its gradient) out once in a Triton pass at the memory's pace and leaves the product to the
library, as compiled timm trains:

- forward: one pass writes a (x read once); y = a W^T (one library product); y's batch statistics in one pass
  over the narrow y (`bn_depthwise_cudnn.statistics`, as the Triton forward gathers them from the stored y);
- backward (`Products`, shared by both gradients): g = dy + dmean / n + (2 dvar / n)(y - mean) over the narrow
  y (`bn_depthwise_cudnn.output_gradient`), da = g W (one product: the wide gradient reaching a);
- weight gradient: one pass writes a again and, with a gate, sums da * s per image and channel (dgate); then
  dW = g^T a (one product, float32);
- input gradient: one pass (`affine_grad`) from da to dx through the gate, the pool's gradient, the SiLU and
  the affine map, with dscale and dshift.

That is about eleven reads and writes of a wide tensor a step (three in the forward) where the Triton passes
make five or six; on small maps those bytes take microseconds. dW's product accumulates in float32; da and a are
stored in x's dtype (as the plain model's cuDNN backward stores its gradients), so a 16-bit step's dx and dW
differ from the Triton passes' within that rounding, and a float32 step's match them (the tests: 1e-5).
`benchmarks/bn_pointwise_sweep.py` times it per projection ("blas") beside the Triton tiles and records it in the
tuning file where it wins; never a default. The same functions on any device (BLAS on a CPU) where the Triton
passes run (a GPU, or the interpreter).
"""
from __future__ import annotations

import functools

import torch

from effnet.fast import bn_depthwise_cudnn as bdc
from effnet.fast import kernels
from effnet.fast.affine_grad import affine_grad
from effnet.fast.bn_pointwise_blas import sum_of_products, without_autocast
from effnet.fast.custom_ops import channels_last_empty, pixel_rows
from effnet.fast.grids import cdiv, image_chunks
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.bn_pointwise_kernels import _image_chunk
    from effnet.fast.kernels import _multiple, _silu

    @triton.jit
    def _activation_kernel(x_ptr, scale_ptr, shift_ptr, gate_ptr, da_ptr, a_ptr, dgate_ptr, pixels, K,
                           rows_per_program, ACT: tl.constexpr, GATE: tl.constexpr, DGATE: tl.constexpr,
                           ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        # One program: rows_per_program pixels of one image (`_image_chunk`) x BLOCK_K channels of the (M, K)
        # channels-last matrices. It writes a = act(x * scale + shift) * gate[image] there and, with DGATE, the
        # sum over its rows of da * act(x * scale + shift) to row `chunk` of the (chunks, K) buffer.
        K = _multiple(K, ALIGN)
        chunk = tl.program_id(0)
        k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < K
        image, start, end = _image_chunk(chunk, pixels, rows_per_program)
        scale = tl.load(scale_ptr + k, mask=k_ok, other=0.0)
        shift = tl.load(shift_ptr + k, mask=k_ok, other=0.0)
        if GATE:
            gate = tl.load(gate_ptr + image * K + k, mask=k_ok, other=0.0)
        else:
            gate = tl.full([BLOCK_K], 1.0, tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for m0 in range(start, end, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            ok = (rm < end)[:, None] & k_ok[None, :]
            offsets = rm[:, None] * K + k[None, :]
            s = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
            if ACT:
                s = _silu(s, ACT)
            tl.store(a_ptr + offsets, (s * gate[None, :]).to(a_ptr.dtype.element_ty), mask=ok)
            if DGATE:
                acc += tl.where(ok, tl.load(da_ptr + offsets, mask=ok, other=0.0).to(tl.float32) * s, 0.0)
        if DGATE:
            tl.store(dgate_ptr + chunk * K + k, tl.sum(acc, axis=0), mask=k_ok)


_ACTIVATION_TILES = (32, 64, 4)  # (BLOCK_M, BLOCK_K, num_warps): first guesses, untimed
_ACTIVATION_PROGRAMS = 1024  # image chunks x channel blocks on a GPU, about (a few under the interpreter)


def applies(scale: torch.Tensor | None) -> bool:
    """Whether this form takes a `bn_pointwise` layer: its input normalised (the affine map given)."""
    return scale is not None


def activation(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, gate: torch.Tensor | None, act: bool,
               da: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(a, dgate): a = act(x * scale + shift) * gate[n], channels-last in x's dtype, in one pass over x; with
    `da` (the gradient reaching a, x's shape) and a gate, dgate (N, C) float32: the sum over each image's pixels
    of da * act(x * scale + shift), in the same pass (else None)."""
    batch, channels, height, width = x.shape
    pixels = height * width
    block_m, block_k, warps = _ACTIVATION_TILES
    blocks_k = cdiv(channels, block_k)
    rows_per_program = image_chunks(batch, pixels, block_m, 4 if INTERPRET else cdiv(_ACTIVATION_PROGRAMS, blocks_k))
    chunks = batch * cdiv(pixels, rows_per_program)
    a = channels_last_empty(x, tuple(x.shape))
    want_dgate = da is not None and gate is not None
    dgate = torch.empty((chunks, channels) if want_dgate else (0,), device=x.device, dtype=torch.float32)
    _activation_kernel[(chunks, blocks_k)](
        x, scale, shift, gate if gate is not None else scale, da if want_dgate else x, a, dgate, pixels, channels,
        rows_per_program, ACT=kernels.act_mode(act, x), GATE=gate is not None, DGATE=want_dgate,
        ALIGN=kernels.map_alignment(x, *([da] if want_dgate else [])), BLOCK_M=block_m, BLOCK_K=block_k,
        **({} if INTERPRET else {"num_warps": warps}))
    if not want_dgate:
        return a, None
    return a, (dgate if chunks == batch else dgate.view(batch, -1, channels).sum(1))


@without_autocast
def forward(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
            gate: torch.Tensor | None, act: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var) as `bn_pointwise._forward` gives them: y = conv1x1(act(x * scale + shift) * gate[n]) by
    `weight` (out, in) in x's dtype, channels-last; y's float32 batch mean and biased variance per channel."""
    a, _ = activation(x, scale, shift, gate, act)
    batch, _, height, width = x.shape
    y = channels_last_empty(x, (batch, weight.shape[0], height, width))
    torch.mm(pixel_rows(a), weight.t(), out=pixel_rows(y))
    return y, *bdc.statistics(y)


class Products:
    """A backward's two products over the narrow gradient, each made when first asked for, so that both
    gradients' passes share them: g, the gradient reaching y (from dy and `stats` (3, out): dmean / n, 2 dvar / n
    and mean, `bn_stats.gradient_stats`), in dy's dtype; da = g W, the gradient reaching a, in x's dtype."""

    def __init__(self, dy: torch.Tensor, stats: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                 x: torch.Tensor) -> None:
        self._dy, self._stats, self._y, self._weight, self._x = dy, stats, y, weight, x

    @functools.cached_property
    def g(self) -> torch.Tensor:
        return bdc.output_gradient(self._dy.contiguous(memory_format=torch.channels_last), self._stats, self._y)

    @functools.cached_property
    def da(self) -> torch.Tensor:
        da = channels_last_empty(self._x, tuple(self._x.shape))
        with torch.autocast(self._x.device.type, enabled=False):
            torch.mm(pixel_rows(self.g), self._weight.to(self.g.dtype), out=pixel_rows(da))
        return da


@without_autocast
def weight_grad(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, gate: torch.Tensor | None, act: bool,
                products: Products) -> tuple[torch.Tensor, torch.Tensor]:
    """(dweight (out, in) float32, dgate (N, in) float32, empty without a gate): a written again, with dgate in the
    same pass where there is a gate (`activation`), then dW = g^T a."""
    a, dgate = activation(x, scale, shift, gate, act, products.da if gate is not None else None)
    dweight = sum_of_products(pixel_rows(products.g), pixel_rows(a))
    return dweight, dgate if dgate is not None else dweight.new_empty((0,))


def input_grad(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, gate: torch.Tensor | None, act: bool,
               products: Products, pool: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, daffine (2, in) float32: dscale and dshift): one pass from da (`affine_grad`), with `pool` (N, in)
    float32 added to the gradient reaching the activation at every pixel of its image (`bn_pointwise._input_grad`)."""
    return affine_grad(products.da, x, scale, shift, act=act, gate=gate, pool=pool)
