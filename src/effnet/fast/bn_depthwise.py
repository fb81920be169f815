"""A depthwise convolution for training with the batch norms fused at both ends (experimental).

The depthwise half of the fused training MBConv (`bn_pointwise` is the 1x1 half). Its input is the
expansion's *raw* output x with that output's batch norm as an affine map (scale, shift):

    a = act(x * scale + shift)                        (one element-wise pass; kept for the backward)
    y = depthwise(a, weight)                          (stored in x's dtype)
    mean[c], var[c] over y[:, c]                      (of the stored y, gathered in the conv's epilogue)

Without scale and shift, a is x itself (a block without expansion). The backward takes dy and the
gradients of mean and var, so the gradient reaching y is g = dy + dmean / n + (2 dvar / n)(y - mean).
The weight gradient runs first: it walks each program's band of output rows once (in several images
where a band is small: `images_per_program`), forms g as each tile of dy and y loads and writes it (in
dy's dtype), loads every tap's input for the tile as one (taps, pixels, channels) block and accumulates
g * a elementwise; it reduces over the pixels once per program (no per-tile reductions or selects, the
cost of `depthwise_train`'s weight gradient). The input gradient then gathers g over the taps, one load
a tap (forming g there would load dy and y at every tap), and, in its epilogue, applies the SiLU's and
the affine map's derivatives and sums dscale and dshift: da, the gradient of the widest tensor of the
block, is never written. Per-program sums are added up by PyTorch (deterministic). A tuning file may send
any of the three passes through cuDNN instead, layer shape by layer shape (`bn_depthwise_cudnn`), or onto the
banded tensor-core kernels (`bn_depthwise_banded`); where it names nothing for a layer, the weight gradient and
a 5 x 5 layer's other passes run through cuDNN on a GPU (`default_cudnn`: run 8's sweep).

`bn_depthwise` is differentiable in x, scale, shift and weight, through PyTorch custom operators
(so `torch.compile` traces it). It runs the Triton kernels for channels-last CUDA tensors, or CPU
tensors under TRITON_INTERPRET=1, and the same function in plain PyTorch elsewhere
(`bn_depthwise_reference`). Not yet timed on a GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.fast import bn_depthwise_banded, bn_depthwise_cudnn, bn_depthwise_sliding, bn_stats, kernels, ops, tuning
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.grids import cdiv, next_power_of_2
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    from effnet.fast.bn_depthwise_kernels import (_dw_activate_kernel, _dw_forward_kernel, _dw_input_grad_kernel,
                                                  _dw_weight_grad_kernel)


# Tiles under the interpreter, whose time goes by the number of programs and loop steps: large ones for
# whole models; the kernel tests take smaller ones, so that their small maps span several programs.
_INTERPRET_TILES = (16, 16, 64, 4)  # (BLOCK_H, BLOCK_W, BLOCK_C, num_warps)
_INTERPRET_WEIGHT_TILES = (16, 8, 16, 64, 4)  # (BAND, BLOCK_H, BLOCK_W, BLOCK_C, num_warps)


def _choice(op: str, x: torch.Tensor, kernel_size: int, stride: int) -> dict | None:
    """The tuning file's entry for this layer shape and pass, if it names one."""
    _, channels, height, width = x.shape
    return tuning.lookup(op, kernel_size=kernel_size, stride=stride, channels=channels, height=height, width=width)


def default_cudnn(op: str, kernel_size: int, stride: int, height: int) -> bool:
    """Whether pass `op` of a depthwise layer (its input `height` pixels high) runs through cuDNN where no tuning
    file names the layer (on a GPU: `_by_default`): the weight gradient of 3 x 3 and 5 x 5 convs, except a 5 x 5
    conv at stride 2 on maps under 28 px, and the forward and the input gradient of 5 x 5 convs. Run 8's sweep (an
    H200, B0 at batch 128, results/2026-11-28_h200_run8_dwforms.log; us, cuDNN's form against the Triton
    kernels' default tiles): the weight gradient faster on 11 of B0's 12 layers, 1.25-4x (32 channels at 112 px
    196 against 455, 240 at 28 px 5 x 5 141 against 569, 1152 at 7 px 5 x 5 67 against 200), slower on its 5 x 5
    stride-2 layer at 14 px (786 against 127); on the five 5 x 5 layers the forward 25% and the input gradient 22%
    faster in all (each input gradient faster, four of five forwards: 240 at 28 px 351 against 322), on the 3 x 3
    layers both slower (32 at 112 px: 321 against 234, 265 against 185)."""
    if kernel_size not in (3, 5):
        return False
    if op == "bn_depthwise_weight_grad":
        return not (kernel_size == 5 and stride == 2 and height < 28)
    return kernel_size == 5


def _by_default(op: str, kernel_size: int, stride: int, height: int) -> bool:
    """`default_cudnn` where the kernels run on a GPU; under the interpreter, never (its tests choose the form)."""
    return not INTERPRET and default_cudnn(op, kernel_size, stride, height)


def _cudnn(op: str, x: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
           output_size: tuple[int, int]) -> bool:
    """Whether this pass runs through cuDNN (`bn_depthwise_cudnn`): the tuning file says so for the layer
    shape, or names nothing for it and `default_cudnn` does, and cuDNN's symmetric padding gives this conv."""
    choice = _choice(op, x, kernel_size, stride)
    wanted = choice["kernel"] == "cudnn" if choice is not None else _by_default(op, kernel_size, stride, x.shape[2])
    return wanted and bn_depthwise_cudnn.takes(x, kernel_size, stride, padding, output_size)


def _banded(op: str, x: torch.Tensor, kernel_size: int, stride: int) -> bool:
    """Whether this pass runs on the banded tensor-core kernel (`bn_depthwise_banded`): the tuning file says so
    for the layer shape (the weight gradient 3 x 3 and 5 x 5 only)."""
    choice = _choice(op, x, kernel_size, stride)
    return (choice is not None and choice["kernel"] == "banded"
            and (op != "bn_depthwise_weight_grad" or kernel_size in (3, 5)))


def _sliding(op: str, x: torch.Tensor, kernel_size: int, stride: int) -> bool:
    """Whether this pass (the forward or the input gradient) runs on the sliding window (`bn_depthwise_sliding`): the
    tuning file says so for the layer shape, a conv it takes."""
    choice = _choice(op, x, kernel_size, stride)
    return (choice is not None and choice["kernel"] == "sliding"
            and bn_depthwise_sliding.takes(kernel_size, stride, op == "bn_depthwise_input_grad"))


def _sliding_tiles(op: str, x: torch.Tensor, kernel_size: int, stride: int) -> tuple[int, ...] | None:
    """The tuning file's tiles for this pass on the sliding window (None where it names none: the defaults)."""
    return tuple(_choice(op, x, kernel_size, stride)["tiles"]) or None


def _tiles(op: str, x: torch.Tensor, kernel_size: int, stride: int) -> tuple[int, ...]:
    """The tuning file's tiles for this layer shape and pass, else the defaults (first guesses, untimed):
    `bn_depthwise` and `bn_depthwise_input_grad` take (BLOCK_H, BLOCK_W, BLOCK_C, num_warps[, warm]: a fifth
    value of 1 takes a stride-1 conv's taps in two phases, `kernels._depthwise_taps`), the
    inference kernel's tiles by default (8 x 8 pixels for 3 x 3, one row of 16 for 5 x 5, where 8 x 8
    spills registers in the input gradient); `bn_depthwise_weight_grad` takes (BAND, BLOCK_H, BLOCK_W,
    BLOCK_C, num_warps), where the (taps, pixels, channels) accumulator holds KK x P x BC floats, so
    5 x 5 kernels (KK = 32) take half the channels of 3 x 3 (KK = 16)."""
    _, channels, height, width = x.shape
    choice = _choice(op, x, kernel_size, stride)
    if choice is not None and choice["kernel"] == "tiled":
        return tuple(choice["tiles"])
    if op == "bn_depthwise_weight_grad":
        if INTERPRET:
            return _INTERPRET_WEIGHT_TILES
        return min(cdiv(height, stride), 16), 2, 8, (32 if kernel_size <= 3 else 16), 4
    if INTERPRET:
        return _INTERPRET_TILES
    if kernel_size <= 3:
        return 8, 8, kernels._pow2(channels, 16, 32), 4
    return 1, 16, kernels._pow2(channels, 16, 64), 4


def _activate_tiles(channels: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_C) of the activation pass."""
    return (256, 64) if INTERPRET else (64, kernels._pow2(channels, 16, 64))


def _activate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, act: bool) -> torch.Tensor:
    a = channels_last_empty(x, tuple(x.shape))
    rows, channels = x.numel() // x.shape[1], x.shape[1]
    block_m, block_c = _activate_tiles(channels)
    _dw_activate_kernel[(cdiv(rows, block_m), cdiv(channels, block_c))](
        x, scale, shift, a, rows, channels, ACT=kernels.act_mode(act, x), ALIGN=kernels.alignment(channels),
        BLOCK_M=block_m, BLOCK_C=block_c)
    return a


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(2), t.stride(3), t.stride(1)


def _forward(x, taps, scale, shift, kernel_size, stride, padding, output_size, act, tiles=None):
    """(y, mean, var, a): a is act(x * scale + shift) (empty without scale: x is the conv's input). The conv
    through cuDNN where the tuning file says so (`bn_depthwise_cudnn.forward`); `tiles` overrides the Triton
    kernel's tile choice (for the sweep)."""
    batch, channels, height, width = x.shape
    out_h, out_w = output_size
    a = _activate(x, scale, shift, act) if scale is not None else x
    if tiles is None and _cudnn("bn_depthwise", x, kernel_size, stride, padding, output_size):
        y, mean, var = bn_depthwise_cudnn.forward(a, taps, kernel_size, stride, padding)
        return y, mean, var, (a if scale is not None else x.new_empty((0,)))
    if tiles is None and _banded("bn_depthwise", x, kernel_size, stride):
        y, mean, var = bn_depthwise_banded.forward(a, taps, kernel_size, stride, padding, output_size)
        return y, mean, var, (a if scale is not None else x.new_empty((0,)))
    if tiles is None and _sliding("bn_depthwise", x, kernel_size, stride):
        y, mean, var = bn_depthwise_sliding.forward(a, taps, kernel_size, stride, padding, output_size,
                                                    _sliding_tiles("bn_depthwise", x, kernel_size, stride))
        return y, mean, var, (a if scale is not None else x.new_empty((0,)))
    y = channels_last_empty(x, (batch, channels, out_h, out_w))
    block_h, block_w, block_c, warps, *warm = tiles or _tiles("bn_depthwise", x, kernel_size, stride)
    warm = bool(warm and warm[0])
    if warm and stride != 1:
        raise ValueError("the warmed depthwise taps are for stride 1")
    blocks_h, blocks_w = cdiv(out_h, block_h), cdiv(out_w, block_w)
    programs = batch * blocks_h * blocks_w
    sums = torch.empty((programs, channels), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(sums)
    _dw_forward_kernel[(programs, cdiv(channels, block_c))](
        a, taps, y, sums, m2, height, width, channels, out_h, out_w, padding[0], padding[1],
        *_strides(a), *_strides(y), K=kernel_size, STRIDE=stride, ALIGN=kernels.map_alignment(a, y),
        EVEN_C=channels % block_c == 0, WARM=warm, BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_C=block_c,
        **({} if INTERPRET else {"num_warps": warps}))
    counts = bn_stats.block_counts(x.device, _tile_counts, batch, out_h, out_w, block_h, block_w)
    mean, var = bn_stats.merge_moments(sums, m2, counts)
    return y, mean, var, (a if scale is not None else x.new_empty((0,)))


# The weight gradient takes several images per program where a band holds few pixels: at least this many
# pixels per program (its (KK, C) partial sums, 4 bytes each, against 6 bytes read per pixel and channel: g's
# dy and y and the input), unless that leaves fewer than this many programs per multiprocessor.
_MIN_PIXELS = 512
_MIN_WAVES = 2


def images_per_program(batch: int, band_pixels: int, programs_per_image: int, device: torch.device) -> int:
    """How many images one weight-gradient program walks: enough for `_MIN_PIXELS` pixels, as long as the
    programs still fill `_MIN_WAVES` per multiprocessor. (One per image, as before session 11, B0's 7 x 7
    layers wrote nearly as many partial-sum bytes as they read.) Two under the interpreter, so that the
    tests' small batches walk several images and a ragged last group."""
    if INTERPRET:
        return 2
    wanted = cdiv(_MIN_PIXELS, band_pixels)
    fill = _MIN_WAVES * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(wanted, batch * programs_per_image // fill))


def _tile_counts(batch: int, out_h: int, out_w: int, block_h: int, block_w: int) -> torch.Tensor:
    """Pixels in each of the forward's tiles, image by image: tile (i, j) holds rows(i) x columns(j)."""
    rows = (out_h - torch.arange(cdiv(out_h, block_h)) * block_h).clamp(max=block_h)
    columns = (out_w - torch.arange(cdiv(out_w, block_w)) * block_w).clamp(max=block_w)
    return (rows[:, None] * columns[None, :]).flatten().repeat(batch)


def _input_grad(dy, stats, x, y, taps, scale, shift, kernel_size, stride, padding, act, g_ready, tiles=None):
    """(dx, daffine), daffine (2, C) dscale and dshift, empty without scale. With `g_ready`, `dy` is g itself
    (the weight gradient's `write_g`): the kernel loads one tensor a tap instead of dy and y."""
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2:]
    block_h, block_w, block_c, warps, *warm = tiles or _tiles("bn_depthwise_input_grad", x, kernel_size, stride)
    warm = bool(warm and warm[0])
    if warm and not (stride == 1 and g_ready):
        raise ValueError("the warmed depthwise taps are for stride 1 (and the input gradient's, for a written g)")
    # each image's pixels in stride^2 parity classes, each tiled (the kernel's `_pixel_tile`)
    programs = (batch * stride * stride * cdiv(cdiv(height, stride), block_h)
                * cdiv(cdiv(width, stride), block_w))
    dx = channels_last_empty(x, tuple(x.shape))
    parts = torch.empty((2, programs, channels), device=x.device, dtype=torch.float32)
    _dw_input_grad_kernel[(programs, cdiv(channels, block_c))](
        dy, y, stats, taps, x, scale if scale is not None else stats, shift if shift is not None else stats,
        dx, parts[0], parts[1], height, width, channels, out_h, out_w, padding[0], padding[1],
        *_strides(x), *_strides(y), K=kernel_size, STRIDE=stride, AFFINE=scale is not None,
        ACT=kernels.act_mode(act, x),
        G_READY=g_ready, ALIGN=kernels.map_alignment(x, y), EVEN_C=channels % block_c == 0, WARM=warm,
        BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_C=block_c, **({} if INTERPRET else {"num_warps": warps}))
    if scale is None:
        return dx, x.new_empty((0,), dtype=torch.float32)
    return dx, parts.sum(1)  # (2, C): dscale and dshift in one reduction


def _weight_grad(dy, stats, x, a, y, kernel_size, stride, padding, scale, write_g, tiles=None):
    """(dtaps (k*k, C) float32, g): with `write_g`, g = dy + dmean / n + (2 dvar / n)(y - mean) as the kernel
    formed it, in dy's dtype and y's layout (for `_input_grad`); else None."""
    batch, channels, height, width = x.shape
    out_h, out_w = y.shape[2:]
    conv_input = a if scale is not None else x
    band, block_h, block_w, block_c, warps = tiles or _tiles("bn_depthwise_weight_grad", x, kernel_size, stride)
    kk = next_power_of_2(kernel_size * kernel_size)
    bands, channel_blocks = cdiv(out_h, band), cdiv(channels, block_c)
    per_program = images_per_program(batch, band * out_w, bands * channel_blocks, x.device)
    programs = cdiv(batch, per_program) * bands
    parts = torch.empty((programs, kk, channels), device=x.device, dtype=torch.float32)
    g = channels_last_empty(y, tuple(y.shape), dy.dtype) if write_g else None
    _dw_weight_grad_kernel[(programs, channel_blocks)](
        dy, y, stats, conv_input, parts, g if write_g else dy, height, width, channels, out_h, out_w, padding[0],
        padding[1], band, batch, per_program, *_strides(conv_input), *_strides(y), K=kernel_size, STRIDE=stride,
        KK=kk, WRITE_G=write_g, ALIGN=kernels.map_alignment(conv_input, y), BLOCK_H=block_h, BLOCK_W=block_w,
        BLOCK_C=block_c, **({} if INTERPRET else {"num_warps": warps}))
    return parts.sum(0)[:kernel_size * kernel_size], g


def _backward(dy, stats, x, a, y, taps, scale, shift, kernel_size, stride, padding, act, need_dx, need_dw,
              tiles=None, weight_tiles=None):
    """(dx, dtaps (k*k, C) float32, daffine (2, C): dscale and dshift), each empty where not asked for or not
    an input.
    `stats` (3, C): dmean / n, 2 dvar / n and mean of y. Asked for both, the weight gradient runs first and
    writes g, which the input gradient then reads (a tap's one load instead of two; g rounded to dy's dtype
    once, as an eager backward rounds each gradient it writes). Where the tuning file names cuDNN for a pass,
    it runs there (`bn_depthwise_cudnn`), on g written by the Triton weight gradient or by a pass of its own.
    `tiles` and `weight_tiles` take the Triton input and weight gradients with those tiles (for the sweep)."""
    dx, dtaps, daffine = (x.new_empty((0,), dtype=torch.float32) for _ in range(3))
    output_size = tuple(y.shape[2:])
    g = None
    if need_dw:
        if weight_tiles is None and _cudnn("bn_depthwise_weight_grad", x, kernel_size, stride, padding, output_size):
            g = bn_depthwise_cudnn.output_gradient(dy, stats, y)
            dtaps = bn_depthwise_cudnn.weight_grad(g, a if scale is not None else x, taps, kernel_size, stride,
                                                   padding)
        elif weight_tiles is None and _banded("bn_depthwise_weight_grad", x, kernel_size, stride):
            g = bn_depthwise_cudnn.output_gradient(dy, stats, y)
            dtaps = bn_depthwise_banded.weight_grad(g, a if scale is not None else x, kernel_size, stride, padding)
        else:
            dtaps, g = _weight_grad(dy, stats, x, a, y, kernel_size, stride, padding, scale, need_dx, weight_tiles)
    if need_dx:
        form, options = None, {}  # the input gradient's cuDNN, banded or sliding form, where the tuning file names one
        if tiles is None and _cudnn("bn_depthwise_input_grad", x, kernel_size, stride, padding, output_size):
            form = bn_depthwise_cudnn
        elif tiles is None and _banded("bn_depthwise_input_grad", x, kernel_size, stride):
            form = bn_depthwise_banded
        elif tiles is None and _sliding("bn_depthwise_input_grad", x, kernel_size, stride):
            form = bn_depthwise_sliding
            options = {"tiles": _sliding_tiles("bn_depthwise_input_grad", x, kernel_size, stride)}
        if form is not None:
            g = g if g is not None else bn_depthwise_cudnn.output_gradient(dy, stats, y)
            dx, daffine = form.input_grad(g, taps, x, scale, shift, kernel_size, stride, padding, act, **options)
        else:
            dx, daffine = _input_grad(dy if g is None else g, stats, x, y, taps, scale, shift, kernel_size,
                                             stride, padding, act, g is not None, tiles)
    return dx, dtaps, daffine


def _taps(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The conv's (C, 1, k, k) weight as the kernels take it: (k*k, C) in `dtype`, made in one copy."""
    taps = weight.new_empty((weight.shape[-2] * weight.shape[-1], weight.shape[0]), dtype=dtype)
    return taps.copy_(weight.flatten(1).t())


# The operators take the parameter as it is (float32 under autocast) and return the taps they made of it: a
# step then casts each weight once, and its gradient reaches the parameter in float32, without the cast and
# the cast back that autocast's copy of the weight would cost in the backward.
@torch.library.custom_op("effnet::bn_depthwise", mutates_args=())
def _forward_op(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
                kernel_size: int, stride: int, padding: list[int], output_size: list[int],
                act: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    taps = _taps(weight, x.dtype)
    return (*_forward(x, taps, scale, shift, kernel_size, stride, tuple(padding), tuple(output_size), act), taps)


@_forward_op.register_fake
def _(x, weight, scale, shift, kernel_size, stride, padding, output_size, act):
    mean = x.new_empty((x.shape[1],), dtype=torch.float32)
    a = channels_last_empty(x, tuple(x.shape)) if scale is not None else x.new_empty((0,))
    return (channels_last_empty(x, (x.shape[0], x.shape[1], *output_size)), mean, torch.empty_like(mean), a,
            x.new_empty((kernel_size * kernel_size, x.shape[1])))


@torch.library.custom_op("effnet::bn_depthwise_backward", mutates_args=())
def _backward_op(dy: torch.Tensor, stats: torch.Tensor, x: torch.Tensor, a: torch.Tensor, y: torch.Tensor,
                 taps: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, kernel_size: int,
                 stride: int, padding: list[int], act: bool, need_dx: bool,
                 need_dw: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(dy, stats, x, a, y, taps, scale, shift, kernel_size, stride, tuple(padding), act, need_dx,
                     need_dw)


@_backward_op.register_fake
def _(dy, stats, x, a, y, taps, scale, shift, kernel_size, stride, padding, act, need_dx, need_dw):
    channels = x.shape[1]

    def empty(shape: tuple, present: bool) -> torch.Tensor:
        return x.new_empty(shape if present else (0,), dtype=torch.float32)

    return (channels_last_empty(x, tuple(x.shape)) if need_dx else empty((0,), False),
            empty((kernel_size * kernel_size, channels), need_dw), empty((2, channels), need_dx and scale is not None))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, scale, shift, kernel_size, stride, padding, _, act = inputs
    y, mean, _, a, taps = output
    ctx.save_for_backward(x, a, y, mean, taps, scale, shift)
    ctx.geometry = (kernel_size, stride, padding, act)
    ctx.weight = (weight.shape, weight.dtype)
    ctx.set_materialize_grads(False)  # `a` gets no gradient: not a full-size tensor of zeros every step


def _autograd_backward(ctx, dy, dmean, dvar, _, __):
    x, a, y, mean, taps, scale, shift = ctx.saved_tensors
    kernel_size, stride, padding, act = ctx.geometry
    needs = ctx.needs_input_grad
    stats = bn_stats.gradient_stats(dmean, dvar, mean, y)
    dy = torch.zeros_like(y) if dy is None else dy.to(y.dtype).contiguous(memory_format=torch.channels_last)
    need_dx = needs[0] or needs[2] or needs[3]
    dx, dtaps, daffine = _backward_op(dy, stats, x, a, y, taps, scale, shift, kernel_size, stride, padding, act,
                                      need_dx, needs[1])
    dweight = None
    if needs[1]:  # (k*k, C) float32 into the parameter's (C, 1, k, k) layout and dtype: one copy
        shape, dtype = ctx.weight
        dweight = dtaps.new_empty((shape[0], dtaps.shape[0]), dtype=dtype)
        dweight.t().copy_(dtaps)
        dweight = dweight.view(shape)
    return (dx if needs[0] else None, dweight, daffine[0] if needs[2] else None, daffine[1] if needs[3] else None,
            None, None, None, None, None)


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def bn_depthwise_reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
                           shift: torch.Tensor | None = None, *, stride: int, padding: tuple[int, int],
                           output_size: tuple[int, int], act: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`bn_depthwise` in plain PyTorch (and what it falls back to): the activation rounded to x's
    dtype, an `F.conv2d` over it padded as the kernels pad, and the float32 mean and biased variance
    of the rounded output."""
    a = x
    if scale is not None:
        z = x.float() * scale[None, :, None, None] + shift[None, :, None, None]
        a = (F.silu(z) if act else z).to(x.dtype)
    y = ops.padded_conv2d(a, weight.to(x.dtype), None, stride=stride, padding=padding, output_size=output_size,
                          groups=x.shape[1])
    var, mean = torch.var_mean(y.float(), dim=(0, 2, 3), correction=0)
    return y, mean, var


def usable(x: torch.Tensor) -> bool:
    """Whether `bn_depthwise` takes the Triton kernels for `x`."""
    return (kernels.usable(x) and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and x.is_contiguous(memory_format=torch.channels_last))


def bn_depthwise(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None, *, stride: int, padding: tuple[int, int],
                 output_size: tuple[int, int], act: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): the depthwise conv by `weight` (C, 1, k, k) of act(x * scale + shift) (of x
    itself without scale and shift), with the float32 per-channel batch mean and biased variance of y.
    `x` is channels-last (N, C, H, W); `padding` is (top, left), bottom and right follow from
    `output_size` (as `ops.conv_geometry` gives them). Differentiable in x, weight, scale and shift."""
    if (scale is None) != (shift is None):
        raise ValueError("bn_depthwise takes scale and shift together (the batch norm's affine map) or neither")
    if not usable(x):
        return bn_depthwise_reference(x, weight, scale, shift, stride=stride, padding=padding,
                                      output_size=output_size, act=act)
    y, mean, var, _, _ = _forward_op(x, weight, scale, shift, weight.shape[-1], stride, list(padding),
                                     list(output_size), act)
    return y, mean, var

