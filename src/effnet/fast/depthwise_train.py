"""Depthwise convolution for training with a Triton forward and backward (experimental, opt-in).

EfficientNet training is slow largely in the depthwise convolutions' backward pass, a long-standing
cuDNN weakness (pytorch/pytorch#18631). This module computes the three depthwise products on
channels-last activations with Triton, accumulating in float32:

- forward  y[n,ho,wo,c] = sum over (kh,kw) of x[n, ho*s-pad_h+kh, wo*s-pad_w+kw, c] * w[c,kh,kw]
  (`kernels.depthwise` with a zero bias, no activation and no pool);
- input gradient  dx[n,hi,wi,c] = sum over (kh,kw) of dy[n,ho,wo,c] * w[c,kh,kw], where
  ho = (hi + pad_h - kh) / s and wo likewise, only where the division is exact and (ho, wo) lies in
  the output (`_tdw_input_grad_kernel`: one program per tile of input pixels x channel block; for
  stride 1 the forward kernel on dy with the taps flipped does it by default);
- weight gradient  dw[c,kh,kw] = sum over (n,ho,wo) of dy[n,ho,wo,c] * x[n, ho*s-pad_h+kh, ...]
  (`_tdw_weight_grad_kernel`: one program per band of output rows of one image x channel block keeps
  all k*k taps' partial sums in registers, then adds them into a float32 buffer with ONE atomic
  add, so atomics are few; the order of those adds makes dw non-deterministic in its last bits.
  Its `tap_major` variant walks the band once per tap instead, with no per-tile reductions).

The three are PyTorch custom operators (`effnet::depthwise_conv` with its autograd formula, and
`effnet::depthwise_conv_input_grad` / `_weight_grad`), so `torch.compile` traces a training model
through them without a graph break and fuses the batch norms and SiLUs around them.

`use_triton_depthwise(model)` swaps every depthwise `nn.Conv2d` / `SameConv2d` of a model for a
`TritonDepthwiseConv2d` that shares its parameters (same state-dict keys). That module takes the
kernels for channels-last inputs on a device they run on, and `F.conv2d` otherwise; both compute
the same function. Not yet timed on a GPU: the tiles below are first guesses.
"""
from __future__ import annotations

import torch
from torch import nn

from effnet.fast import kernels, ops, tuning
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.grids import cdiv, next_power_of_2
from effnet.fast.kernels import INTERPRET, _pow2, triton
from effnet.models.layers import SameConv2d

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _load_pixels, _pixel_tile, _store_pixels, _tap, _tap_weight

    @triton.jit
    def _tdw_input_grad_kernel(dy_ptr, w_ptr, dx_ptr, H, W, C, HO, WO, pad_h, pad_w,
                               sdn, sdh, sdw, sdc, sxn, sxh, sxw, sxc,
                               K: tl.constexpr, STRIDE: tl.constexpr,
                               BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_H x BLOCK_W input pixels x BLOCK_C channels, gathering from dy every
        # output pixel whose window covers them.
        pid = tl.program_id(0)
        n, hi, wi = _pixel_tile(pid, H, W, BLOCK_H, BLOCK_W)  # hi, wi: (P,)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        in_ok = (hi < H) & (wi < W)
        acc = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], dtype=tl.float32)
        for kh in tl.static_range(K):
            th = hi + pad_h - kh  # (P,) = ho * STRIDE where the tap lines up
            ho = th // STRIDE
            h_ok = (th >= 0) & (ho * STRIDE == th) & (ho < HO)
            for kw in tl.static_range(K):
                tw = wi + pad_w - kw
                wo = tw // STRIDE
                ok = in_ok & h_ok & (tw >= 0) & (wo * STRIDE == tw) & (wo < WO)  # (P,)
                dy = _load_pixels(dy_ptr, n, ho, wo, c, ok, c_ok, sdn, sdh, sdw, sdc)  # (P, BC)
                acc += dy.to(tl.float32) * _tap_weight(w_ptr, kh, kw, c, c_ok, C, K)[None, :]
        _store_pixels(dx_ptr, acc, n, hi, wi, c, in_ok, c_ok, sxn, sxh, sxw, sxc)

    @triton.jit
    def _input_grad_parity_kernel(dy_ptr, w_ptr, dx_ptr, H, W, C, HO, WO, pad_h, pad_w,
                                  sdn, sdh, sdw, sdc, sxn, sxh, sxw, sxc,
                                  K: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                                  BLOCK_C: tl.constexpr):
        # Stride 2 only. One program: BLOCK_H x BLOCK_W input pixels of one parity (hi % 2, wi % 2),
        # every other row and column of a 2*BLOCK_H x 2*BLOCK_W patch. Only the taps that line up with
        # that parity reach them (kh = hi + pad_h mod 2, likewise kw): about a quarter of the k*k taps
        # are visited, where `_tdw_input_grad_kernel` visits all and masks three quarters off.
        pid = tl.program_id(0)
        parity = pid % 4  # fastest: the four parities of one patch run side by side
        rest = pid // 4
        blocks_w = tl.cdiv(tl.cdiv(W, 2), BLOCK_W)
        blocks_h = tl.cdiv(tl.cdiv(H, 2), BLOCK_H)
        p = tl.arange(0, BLOCK_H * BLOCK_W)  # (P,)
        wi = 2 * ((rest % blocks_w) * BLOCK_W + p % BLOCK_W) + parity % 2  # (P,)
        hi = 2 * (((rest // blocks_w) % blocks_h) * BLOCK_H + p // BLOCK_W) + parity // 2  # (P,)
        n = rest // (blocks_w * blocks_h)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        in_ok = (hi < H) & (wi < W)
        acc = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], dtype=tl.float32)
        for kh in range(((parity // 2) + pad_h) % 2, K, 2):
            th = hi + pad_h - kh  # (P,) even: 2 * ho
            ho = th // 2
            h_ok = (th >= 0) & (ho < HO)
            for kw in range(((parity % 2) + pad_w) % 2, K, 2):
                tw = wi + pad_w - kw
                wo = tw // 2
                ok = in_ok & h_ok & (tw >= 0) & (wo < WO)  # (P,)
                dy = _load_pixels(dy_ptr, n, ho, wo, c, ok, c_ok, sdn, sdh, sdw, sdc)  # (P, BC)
                acc += dy.to(tl.float32) * _tap_weight(w_ptr, kh, kw, c, c_ok, C, K)[None, :]
        _store_pixels(dx_ptr, acc, n, hi, wi, c, in_ok, c_ok, sxn, sxh, sxw, sxc)

    @triton.jit
    def _tdw_weight_grad_kernel(x_ptr, dy_ptr, dw_ptr, H, W, C, HO, WO, pad_h, pad_w,
                                sxn, sxh, sxw, sxc, sdn, sdh, sdw, sdc,
                                K: tl.constexpr, STRIDE: tl.constexpr, KK: tl.constexpr, BAND: tl.constexpr,
                                BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                                TAP_MAJOR: tl.constexpr):
        # One program: BAND output rows of one image x BLOCK_C channels, walked in BLOCK_H x BLOCK_W
        # tiles (BAND is a multiple of BLOCK_H).
        pid = tl.program_id(0)
        bands = tl.cdiv(HO, BAND)
        n = pid // bands
        band_start = (pid % bands) * BAND
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        p = tl.arange(0, BLOCK_H * BLOCK_W)  # (P,)
        if TAP_MAJOR:
            # Taps outermost: each tap walks the band, summing x * dy elementwise in a (P, BC) tile, and
            # reduces over the pixels and adds to dw once at its end (k*k atomic adds of BC values).
            # dy is loaded k*k times (from cache after the first), but nothing is reduced per tile.
            for kh in tl.static_range(K):
                for kw in tl.static_range(K):
                    products = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], dtype=tl.float32)
                    for h0 in range(band_start, tl.minimum(band_start + BAND, HO), BLOCK_H):
                        for w0 in range(0, WO, BLOCK_W):
                            ho, wo = h0 + p // BLOCK_W, w0 + p % BLOCK_W  # (P,) each
                            out_ok = (ho < HO) & (wo < WO)
                            dy = _load_pixels(dy_ptr, n, ho, wo, c, out_ok, c_ok, sdn, sdh, sdw, sdc)  # (P, BC)
                            hi, wi, ok = _tap(ho, wo, out_ok, kh, kw, STRIDE, pad_h, pad_w, H, W)  # (P,) each
                            x = _load_pixels(x_ptr, n, hi, wi, c, ok, c_ok, sxn, sxh, sxw, sxc)  # (P, BC)
                            products += x.to(tl.float32) * dy.to(tl.float32)
                    tl.atomic_add(dw_ptr + (kh * K + kw) * C + c, tl.sum(products, axis=0), mask=c_ok)
        else:
            # Tiles outermost: dy is loaded once per tile, and each tap's partial sum over the tile goes
            # into row `tap` of `acc` (k*k x BC, in registers); one atomic add per program at the end.
            taps = tl.arange(0, KK)  # (KK,)
            acc = tl.zeros([KK, BLOCK_C], dtype=tl.float32)
            for h0 in range(band_start, tl.minimum(band_start + BAND, HO), BLOCK_H):
                for w0 in range(0, WO, BLOCK_W):
                    ho, wo = h0 + p // BLOCK_W, w0 + p % BLOCK_W  # (P,) each
                    out_ok = (ho < HO) & (wo < WO)
                    dy = _load_pixels(dy_ptr, n, ho, wo, c, out_ok, c_ok, sdn, sdh, sdw, sdc).to(tl.float32)
                    for kh in tl.static_range(K):
                        for kw in tl.static_range(K):
                            hi, wi, ok = _tap(ho, wo, out_ok, kh, kw, STRIDE, pad_h, pad_w, H, W)  # (P,) each
                            x = _load_pixels(x_ptr, n, hi, wi, c, ok, c_ok, sxn, sxh, sxw, sxc)  # (P, BC)
                            part = tl.sum(x.to(tl.float32) * dy, axis=0)  # (BC,)
                            acc = tl.where(taps[:, None] == kh * K + kw, acc + part[None, :], acc)
            tap_ok = taps < K * K  # rows K*K..KK-1 only pad KK to a power of two
            tl.atomic_add(dw_ptr + taps[:, None] * C + c[None, :], acc, mask=tap_ok[:, None] & c_ok[None, :])


# The interpreter's time goes by the number of programs more than by their size: large tiles there
# (the test model's 48-144 channels still span several channel blocks and its maps several tiles).
_INTERPRET_FORWARD_TILES = (4, 8, 64, 1, 4)


def _input_grad_tiles(channels: int) -> tuple[int, int, int, int]:
    """(BLOCK_H, BLOCK_W, BLOCK_C, num_warps): the forward's 3 x 3 tile shape, untimed here."""
    return (8, 8, 64, 4) if INTERPRET else (8, 8, _pow2(channels, 16, 32), 4)


def _weight_grad_tiles(channels: int) -> tuple[int, int, int, int, int, int]:
    """(BAND, BLOCK_H, BLOCK_W, BLOCK_C, num_warps, tap_major), untimed here. Eight output rows per
    program: a 112 x 112 map at batch 256 still makes 3584 programs per channel block."""
    return (8, 4, 8, 64, 4, 0) if INTERPRET else (8, 2, 16, _pow2(channels, 16, 32), 4, 0)


def input_grad(grad_output: torch.Tensor, weight_taps: torch.Tensor, input_size: tuple[int, int], *,
               kernel_size: int, stride: int, padding: tuple[int, int],
               tiles: tuple[int, ...] | None = None) -> torch.Tensor:
    """dx (N, C, H, W, channels-last, dy's dtype) of a depthwise conv from dy and its (k*k, C) taps.

    `padding` is the forward's (top, left); `input_size` the forward input's (H, W).
    By default a stride-1 conv's dx is the inference kernel's forward conv of dy with flipped taps.
    `tiles` = (BLOCK_H, BLOCK_W, BLOCK_C, num_warps[, parity]) (or a tuning file's) takes the gradient
    kernel instead; `parity` (stride 2 only, default 0) the one whose programs each cover one parity of
    input pixels.
    """
    batch, channels, out_h, out_w = grad_output.shape
    height, width = input_size
    if tiles is None:
        choice = tuning.lookup("depthwise_input_grad", kernel_size=kernel_size, stride=stride, channels=channels,
                               height=height, width=width)
        if choice is None and stride == 1:
            # dx is the forward conv of dy with the taps flipped on both axes and k-1-pad padding: the
            # inference kernel, with its measured tiles (and the banded kernel where a tuning file says so).
            k = kernel_size
            flipped = weight_taps.reshape(k, k, channels).flip(0, 1).reshape(k * k, channels).contiguous()
            return _forward(grad_output, flipped, kernel_size=k, stride=1,
                            padding=(k - 1 - padding[0], k - 1 - padding[1]), output_size=(height, width))
        tiles = tuple(choice["tiles"]) if choice is not None else _input_grad_tiles(channels)
    dx = torch.empty((batch, channels, height, width), device=grad_output.device, dtype=grad_output.dtype,
                     memory_format=torch.channels_last)
    block_h, block_w, block_c, warps, parity = (*tiles, 0) if len(tiles) == 4 else tiles
    if parity and stride != 2:
        raise ValueError(f"the input gradient's parity variant is for stride 2, not stride {stride}")
    dy = grad_output
    args = (dy, weight_taps, dx, height, width, channels, out_h, out_w, padding[0], padding[1],
            dy.stride(0), dy.stride(2), dy.stride(3), dy.stride(1),
            dx.stride(0), dx.stride(2), dx.stride(3), dx.stride(1))
    options = dict(K=kernel_size, BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_C=block_c,
                   **({} if INTERPRET else {"num_warps": warps}))
    if parity:
        grid = (batch * cdiv(cdiv(height, 2), block_h) * cdiv(cdiv(width, 2), block_w) * 4,
                cdiv(channels, block_c))
        _input_grad_parity_kernel[grid](*args, **options)
    else:
        grid = (batch * cdiv(height, block_h) * cdiv(width, block_w), cdiv(channels, block_c))
        _tdw_input_grad_kernel[grid](*args, STRIDE=stride, **options)
    return dx


def weight_grad(x: torch.Tensor, grad_output: torch.Tensor, *, kernel_size: int, stride: int,
                padding: tuple[int, int], tiles: tuple[int, ...] | None = None) -> torch.Tensor:
    """dw (C, 1, k, k) in float32 of a depthwise conv of `x` whose output's gradient is `grad_output`.

    `tiles` = (BAND, BLOCK_H, BLOCK_W, BLOCK_C, num_warps[, tap_major]) overrides the tile choice; BAND
    (output rows per program) must be a multiple of BLOCK_H. `tap_major` (default 0) walks the band
    once per tap instead of once in all (see `_tdw_weight_grad_kernel`).
    """
    channels = x.shape[1]
    sums = _weight_grad_taps(x, grad_output, kernel_size=kernel_size, stride=stride, padding=padding, tiles=tiles)
    return sums.t().reshape(channels, 1, kernel_size, kernel_size)


def _weight_grad_taps(x: torch.Tensor, grad_output: torch.Tensor, *, kernel_size: int, stride: int,
                      padding: tuple[int, int], tiles: tuple[int, ...] | None = None) -> torch.Tensor:
    """The weight gradient laid out as the taps, (k*k, C) float32."""
    batch, channels, height, width = x.shape
    out_h, out_w = grad_output.shape[2:]
    if tiles is None:
        choice = tuning.lookup("depthwise_weight_grad", kernel_size=kernel_size, stride=stride, channels=channels,
                               height=height, width=width)
        tiles = tuple(choice["tiles"]) if choice is not None else _weight_grad_tiles(channels)
    band, block_h, block_w, block_c, warps, tap_major = (*tiles, 0) if len(tiles) == 5 else tiles
    if band % block_h:
        raise ValueError(f"the band ({band} rows) must be a multiple of BLOCK_H ({block_h})")
    sums = torch.zeros((kernel_size * kernel_size, channels), device=x.device, dtype=torch.float32)
    grid = (batch * cdiv(out_h, band), cdiv(channels, block_c))
    dy = grad_output
    _tdw_weight_grad_kernel[grid](x, dy, sums, height, width, channels, out_h, out_w, padding[0], padding[1],
                              x.stride(0), x.stride(2), x.stride(3), x.stride(1),
                              dy.stride(0), dy.stride(2), dy.stride(3), dy.stride(1),
                              K=kernel_size, STRIDE=stride, KK=next_power_of_2(kernel_size * kernel_size),
                              BAND=band, BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_C=block_c, TAP_MAJOR=bool(tap_major),
                              **({} if INTERPRET else {"num_warps": warps}))
    return sums


# The three products as PyTorch custom operators: `torch.compile` then traces a training model through
# them without a graph break (each is one opaque call in the graph, shapes from the fake functions),
# and autograd takes the forward's gradient from the other two.

def _forward(x: torch.Tensor, taps: torch.Tensor, *, kernel_size: int, stride: int, padding: tuple[int, int],
             output_size: tuple[int, int]) -> torch.Tensor:
    """The inference depthwise pass without bias, SiLU or SE sums, on the tuned choice for x's shape
    (measured with SiLU and the SE sums; close enough) or the default tiles."""
    zero_bias = torch.zeros(taps.shape[1], device=x.device, dtype=x.dtype)
    return ops.tuned_depthwise(x, taps, zero_bias, kernel_size=kernel_size, stride=stride, padding=padding,
                               output_size=output_size, act=False, pool=False,
                               tiles=_INTERPRET_FORWARD_TILES if INTERPRET else None)[0]


@torch.library.custom_op("effnet::depthwise_conv", mutates_args=())
def _depthwise_conv_op(x: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int, padding: list[int],
                       output_size: list[int]) -> torch.Tensor:
    return _forward(x, taps, kernel_size=kernel_size, stride=stride, padding=tuple(padding),
                    output_size=tuple(output_size))


@_depthwise_conv_op.register_fake
def _(x, taps, kernel_size, stride, padding, output_size):
    return channels_last_empty(x, (x.shape[0], x.shape[1], *output_size))


@torch.library.custom_op("effnet::depthwise_conv_input_grad", mutates_args=())
def _input_grad_op(grad_output: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int,
                   padding: list[int], input_size: list[int]) -> torch.Tensor:
    return input_grad(grad_output, taps, tuple(input_size), kernel_size=kernel_size, stride=stride,
                      padding=tuple(padding))


@_input_grad_op.register_fake
def _(grad_output, taps, kernel_size, stride, padding, input_size):
    return channels_last_empty(grad_output, (grad_output.shape[0], grad_output.shape[1], *input_size))


@torch.library.custom_op("effnet::depthwise_conv_weight_grad", mutates_args=())
def _weight_grad_op(x: torch.Tensor, grad_output: torch.Tensor, kernel_size: int, stride: int,
                    padding: list[int]) -> torch.Tensor:
    return _weight_grad_taps(x, grad_output, kernel_size=kernel_size, stride=stride, padding=tuple(padding))


@_weight_grad_op.register_fake
def _(x, grad_output, kernel_size, stride, padding):
    return x.new_empty((kernel_size * kernel_size, x.shape[1]), dtype=torch.float32)


def _setup_context(ctx, inputs, output) -> None:
    x, taps, kernel_size, stride, padding, _ = inputs
    ctx.save_for_backward(x, taps)
    ctx.geometry = (kernel_size, stride, padding)


def _backward(ctx, grad_output: torch.Tensor):
    x, taps = ctx.saved_tensors
    kernel_size, stride, padding = ctx.geometry
    # Channels-last for coalesced loads; autograd may hand over any layout (even stride 0).
    dy = grad_output.contiguous(memory_format=torch.channels_last)
    dx = dtaps = None
    if ctx.needs_input_grad[0]:
        dx = _input_grad_op(dy, taps, kernel_size, stride, padding, list(x.shape[2:]))
    if ctx.needs_input_grad[1]:
        dtaps = _weight_grad_op(x, dy, kernel_size, stride, padding).to(taps.dtype)
    return dx, dtaps, None, None, None, None


_depthwise_conv_op.register_autograd(_backward, setup_context=_setup_context)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, *, stride: int, padding: tuple[int, int],
                   output_size: tuple[int, int]) -> torch.Tensor:
    """Depthwise conv of channels-last `x` (N, C, H, W) by `weight` (C, 1, k, k), no bias, differentiable
    in both through the Triton kernels (`effnet::depthwise_conv` and its two gradient operators).
    `padding` is (top, left); bottom/right follow from `output_size`."""
    taps = weight.flatten(1).t().contiguous()  # (k*k, C); autograd carries dtaps back to the weight's shape
    return _depthwise_conv_op(x, taps, weight.shape[-1], stride, list(padding), list(output_size))


class TritonDepthwiseConv2d(nn.Conv2d):
    """A depthwise `nn.Conv2d` (square kernel and stride, no dilation) whose forward and backward run
    as Triton kernels on channels-last inputs where they can, and as `F.conv2d` elsewhere.

    `same=True` pads as TensorFlow's "same" (like `SameConv2d`, whose `padding` is 0); otherwise
    the conv's own symmetric `padding` applies. Parameters and state-dict keys are nn.Conv2d's.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int | tuple[int, int] = 0,
                 bias: bool = False, same: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(channels, channels, kernel_size, stride, padding, groups=channels, bias=bias,
                         device=device, dtype=dtype)
        self.same = same

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> TritonDepthwiseConv2d:
        """The Triton version of a depthwise `conv`, sharing its weight and bias tensors."""
        if not _replaceable(conv):
            raise ValueError(f"not a depthwise conv with a square kernel and stride, no dilation and numeric "
                             f"zero padding: {conv}")
        new = cls(conv.in_channels, conv.kernel_size[0], conv.stride[0], conv.padding, bias=conv.bias is not None,
                  same=isinstance(conv, SameConv2d), device="meta")
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def extra_repr(self) -> str:
        return super().extra_repr() + (", same=True" if self.same else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._triton(x):
            return self._reference(x)
        kernel_size, stride = self.kernel_size[0], self.stride[0]
        if self.same:
            output_size, padding = ops.conv_geometry(x, kernel_size, stride, same=True)
        else:
            padding = self.padding
            output_size = tuple((size + 2 * pad - kernel_size) // stride + 1 for size, pad in zip(x.shape[2:], padding))
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):
            # As autocast runs F.conv2d: input, weight and bias in the autocast dtype.
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        y = depthwise_conv(x, weight, stride=stride, padding=padding, output_size=output_size)  # (N, C, HO, WO)
        if bias is not None:
            y = y + bias.to(y.dtype)[None, :, None, None]
        return y

    def _triton(self, x: torch.Tensor) -> bool:
        # Float64 would lose precision in the float32 accumulators; the weight gradient's atomic adds
        # are not deterministic.
        return (kernels.usable(x) and kernels.addressable(x.numel()) and x.dim() == 4 and x.dtype != torch.float64
                and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.are_deterministic_algorithms_enabled())

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:  # as SameConv2d pads; the conv's own padding is then 0
            x = ops.pad_for_conv(x, self.kernel_size[0], self.stride[0], same=True)
        return super().forward(x)


def _replaceable(module: nn.Module) -> bool:
    """A plain depthwise conv (exactly nn.Conv2d or SameConv2d) that the kernels compute."""
    if type(module) not in (nn.Conv2d, SameConv2d):
        return False
    channels = module.in_channels
    return (module.groups == channels == module.out_channels > 1
            and module.kernel_size[0] == module.kernel_size[1] and module.stride[0] == module.stride[1]
            and module.dilation == (1, 1) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
            and (type(module) is nn.Conv2d or module.padding == (0, 0)))


def use_triton_depthwise(model: nn.Module) -> nn.Module:
    """Replace (in place) every depthwise conv of `model` by a `TritonDepthwiseConv2d` sharing its
    parameters; returns the model (the new conv, if `model` itself is one). Depthwise convs the
    kernels do not cover (non-square kernel or stride, dilation, string padding, other padding
    modes, subclasses with their own forward) are left as they are."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"use_triton_depthwise needs an nn.Module, got {type(model).__name__}")
    if _replaceable(model):
        return TritonDepthwiseConv2d.from_conv(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _replaceable(child):
                setattr(parent, name, TritonDepthwiseConv2d.from_conv(child))
    return model
