"""The fused inference operations, each with a Triton path and the plain PyTorch reference.

`use_triton=None` picks Triton for CUDA tensors when Triton is installed and PyTorch elsewhere;
True or False forces one. True also runs CPU tensors through Triton's interpreter when
`TRITON_INTERPRET=1` (slow: for testing the kernels without a GPU); True where neither is possible
is an error. Both paths compute the same function; the tests hold them to each other.

On the Triton path a tuning file (`effnet.fast.tuning`, `EFFNET_TUNING=FILE`) may name, per layer
shape, other tiles or another kernel measured faster there (the banded depthwise kernel, the
depthwise conv through cuDNN, the streaming 1x1 kernel, a 1x1 conv as one cuBLAS product); shapes it
does not name take `kernels`' defaults. While `torch.compile` or `torch.export` traces a graph, the
Triton path goes through `effnet.fast.custom_ops` (one opaque operator per pass); eager calls launch
the kernels directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.fast import (banded, blas, custom_ops, depthwise_cudnn, depthwise_sliding, expansion, kernels, streaming,
                         tuning)
from effnet.fast.excitation import excitation as fused_excitation


def _triton(x: torch.Tensor, use_triton: bool | None, widest: int = 0) -> bool:
    """Whether a pass on x runs the Triton kernels: `use_triton`, or by default on a GPU; never for tensors (x, or
    the pass's widest, `widest` elements) past the kernels' 32-bit offsets (`kernels.addressable`)."""
    addressable = kernels.addressable(x.numel(), widest)
    if use_triton is None:
        return x.is_cuda and kernels.usable(x) and addressable
    if use_triton and not kernels.usable(x):
        raise RuntimeError(f"Triton kernels cannot run on a {x.device.type} tensor here "
                           "(no Triton, or no GPU and TRITON_INTERPRET is not 1)")
    if use_triton and not addressable:
        raise RuntimeError(f"Triton kernels take tensors of at most {kernels.MAX_ELEMENTS:,} elements (32-bit "
                           f"offsets); this pass has {max(x.numel(), widest):,}: take a smaller batch or "
                           "use_triton=None")
    return use_triton


def _widened(x: torch.Tensor, channels: int) -> int:
    """Elements of a map of x's batch and pixels with `channels` channels."""
    return x.numel() // max(x.shape[1], 1) * channels


def conv_output_size(size: int, kernel_size: int, stride: int, same: bool) -> tuple[int, int]:
    """(output size, padding before) along one axis: TF "same" or symmetric `k // 2` padding."""
    if same:
        out = (size + stride - 1) // stride
        total = max((out - 1) * stride + kernel_size - size, 0)
        return out, total // 2
    pad = kernel_size // 2
    return (size + 2 * pad - kernel_size) // stride + 1, pad


def conv_geometry(x: torch.Tensor, kernel_size: int, stride: int,
                  same: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """((output height, width), (padding top, left)) of a k x k conv over NCHW-shaped `x`."""
    out_h, pad_h = conv_output_size(x.shape[2], kernel_size, stride, same)
    out_w, pad_w = conv_output_size(x.shape[3], kernel_size, stride, same)
    return (out_h, out_w), (pad_h, pad_w)


def pad_for_conv(x: torch.Tensor, kernel_size: int, stride: int, same: bool) -> torch.Tensor:
    """`x` zero-padded so that an unpadded k x k conv with `stride` gives `conv_geometry`'s output:
    the reference paths' way to pad as the kernels do (the extra bottom/right row of "same"
    padding, and any a strided conv would not reach, fall out of the output size)."""
    output_size, padding = conv_geometry(x, kernel_size, stride, same)
    return _pad_to(x, kernel_size, stride, padding, output_size)


def _pad_to(x: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
            output_size: tuple[int, int]) -> torch.Tensor:
    """x zero-padded `padding` at the top and left, at the bottom and right as far as `output_size` reads."""
    pad_b = (output_size[0] - 1) * stride + kernel_size - x.shape[2] - padding[0]
    pad_r = (output_size[1] - 1) * stride + kernel_size - x.shape[3] - padding[1]
    return F.pad(x, [padding[1], max(pad_r, 0), padding[0], max(pad_b, 0)])


def pads_symmetrically(x: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
                       output_size: tuple[int, int]) -> bool:
    """Whether a conv over NCHW-shaped x padded `padding` on both sides has `output_size`, and so the output of
    the kernels' padding (top and left `padding`, bottom and right as `output_size` needs)."""
    return all((size + 2 * pad - kernel_size) // stride + 1 == out
               for size, pad, out in zip(x.shape[2:], padding, output_size, strict=True))


def padded_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int,
                  padding: tuple[int, int], output_size: tuple[int, int], groups: int = 1) -> torch.Tensor:
    """`F.conv2d` of x padded as the kernels pad: top and left `padding`, bottom and right as `output_size`
    needs. Where that is symmetric (`pads_symmetrically`) it is the conv's own padding, with no padded copy of
    x, which on a CPU cost the fast model's fallback a copy of each depthwise input (B0's eager forward 1.4x
    slower); TF "same" padding of an even map at stride 2 pads one side more, so x is padded first there."""
    kernel_size = weight.shape[-1]
    if pads_symmetrically(x, kernel_size, stride, padding, output_size):
        return F.conv2d(x, weight, bias, stride, padding, groups=groups)
    x = _pad_to(x, kernel_size, stride, padding, output_size)
    return F.conv2d(x, weight, bias, stride, groups=groups)[:, :, :output_size[0], :output_size[1]]


def conv2d_as_kernels_pad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: int,
                          same: bool, groups: int = 1) -> torch.Tensor:
    """`padded_conv2d` with `conv_geometry`'s padding: TF "same" with `same`, else symmetric `k // 2`."""
    output_size, padding = conv_geometry(x, weight.shape[-1], stride, same)
    return padded_conv2d(x, weight, bias, stride=stride, padding=padding, output_size=output_size, groups=groups)


def depthwise(x: torch.Tensor, weight: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, *,
              stride: int, same: bool, act: bool = True, pool: bool = False,
              use_triton: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SiLU(depthwise_conv(x) + bias) and, with `pool`, its per-image channel sums (N, C) in float32 (float64 for
    a float64 x, which only PyTorch's path takes).

    `weight` is the conv's (C, 1, k, k); `weight_taps` the same values laid out (k*k, C).
    """
    kernel_size = weight.shape[-1]
    if _triton(x, use_triton):
        output_size, padding = conv_geometry(x, kernel_size, stride, same)
        if torch.compiler.is_compiling():
            y, sums = custom_ops.fused_depthwise(x, weight_taps, bias, kernel_size, stride, list(padding),
                                                 list(output_size), act, pool)
            return y, (sums if pool else None)
        return tuned_depthwise(x, weight_taps, bias, kernel_size=kernel_size, stride=stride, padding=padding,
                               output_size=output_size, act=act, pool=pool)
    y = conv2d_as_kernels_pad(x, weight, bias, stride=stride, same=same, groups=x.shape[1])  # (N, C, HO, WO)
    if act:
        y = F.silu(y, inplace=True)
    return y, (y.sum((2, 3), dtype=at_least_float32(y.dtype)) if pool else None)


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype the squeeze-excitation's pool and gate take for activations in `dtype`: float32, or float64."""
    return torch.promote_types(dtype, torch.float32)


def tuned_depthwise(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, *, kernel_size: int, stride: int,
                    padding: tuple[int, int], output_size: tuple[int, int], act: bool, pool: bool,
                    tiles: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Triton depthwise pass (`kernels.depthwise`'s arguments) on the tuning file's choice for x's
    shape, the banded kernel, cuDNN's conv with one activation pass, the sliding window or other tiles, else on
    `tiles` (None: the kernel's defaults)."""
    choice = tuning.lookup("depthwise", kernel_size=kernel_size, stride=stride, channels=x.shape[1],
                           height=x.shape[2], width=x.shape[3])
    geometry = dict(kernel_size=kernel_size, padding=padding, output_size=output_size, act=act, pool=pool)
    if choice is not None and choice["kernel"] == "banded":
        return banded.banded_depthwise(x, weight_taps, bias, stride=stride, **geometry, tiles=tuple(choice["tiles"]))
    if choice is not None and choice["kernel"] == "cudnn":
        return depthwise_cudnn.depthwise_cudnn(x, weight_taps, bias, stride=stride, **geometry)
    if choice is not None and choice["kernel"] == "sliding":
        return depthwise_sliding.depthwise_sliding(x, weight_taps, bias, stride=stride, **geometry,
                                                   tiles=tuple(choice["tiles"]))
    return kernels.depthwise(x, weight_taps, bias, stride=stride, **geometry,
                             tiles=tuple(choice["tiles"]) if choice is not None else tiles)


def expand_depthwise(x: torch.Tensor, expand: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                     depthwise_weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, stride: int, same: bool,
                     pool: bool = False, use_triton: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`depthwise(pointwise(x, act=SiLU))` in one pass on Triton (the expansion never stored).

    `expand` is (weight, weight_t, bias) of the 1x1 expansion, `depthwise_weights` (weight,
    weight_taps, bias) of the depthwise conv, as `pointwise` and `depthwise` take them.
    """
    expand_weight, expand_t, expand_bias = expand
    weight, taps, bias = depthwise_weights
    if _triton(x, use_triton, _widened(x, expand_weight.shape[0])):
        kernel_size = weight.shape[-1]
        output_size, padding = conv_geometry(x, kernel_size, stride, same)
        return expansion.expand_depthwise(x, expand_t, expand_bias, taps, bias, kernel_size=kernel_size,
                                          stride=stride, padding=padding, output_size=output_size, pool=pool)
    expanded = pointwise(x, expand_weight, expand_t, expand_bias, act=True, use_triton=False)
    return depthwise(expanded, weight, taps, bias, stride=stride, same=same, pool=pool, use_triton=False)


def pointwise(x: torch.Tensor, weight: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *,
              act: bool, gate: torch.Tensor | None = None, residual: torch.Tensor | None = None,
              use_triton: bool | None = None, gate_in_place: bool = False) -> torch.Tensor:
    """act(conv1x1(x * gate) + bias) + residual.

    `weight` is the conv's (out, in, 1, 1); `weight_t` the same values laid out (in, out).
    `gate` is (N, in) float32 or None; `residual` (N, out, H, W) or None. With `gate_in_place` the PyTorch
    path gates x in place where autograd does not need it (the fused block's x is its own scratch): on a
    CPU that spares a fresh activation-sized tensor per gated block.
    """
    if _triton(x, use_triton, _widened(x, weight.shape[0])):
        if torch.compiler.is_compiling():
            return custom_ops.fused_pointwise(x, weight_t, bias, act, gate, residual)
        return tuned_pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual)
    if gate is not None:
        scale = gate.to(x.dtype)[:, :, None, None]  # (N, in, 1, 1)
        in_place = gate_in_place and not (torch.is_grad_enabled() and x.requires_grad)
        x = x.mul_(scale) if in_place else x * scale  # (N, in, H, W)
    y = F.conv2d(x, weight, bias)  # (N, out, H, W)
    if act:
        y = F.silu(y, inplace=True)
    if residual is not None:
        y = y.add_(residual)
    return y


def tuned_pointwise(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *, act: bool,
                    gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton 1x1 pass (`kernels.pointwise`'s arguments) on the tuning file's choice for x's shape:
    the streaming kernel, other tiles or the library's matrix product, else `default_pointwise`."""
    choice = tuning.lookup("pointwise", in_channels=x.shape[1], out_channels=weight_t.shape[1], height=x.shape[2],
                           width=x.shape[3], gated=gate is not None, residual=residual is not None)
    if choice is None:
        return default_pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual)
    if choice["kernel"] == "cublas":
        return blas.pointwise_blas(x, weight_t, bias, act=act, gate=gate, residual=residual)
    if choice["kernel"] == "streaming":
        return streaming.pointwise_streaming(x, weight_t, bias, act=act, gate=gate, residual=residual,
                                             tiles=tuple(choice["tiles"]))
    return kernels.pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual,
                             tiles=tuple(choice["tiles"]), gate_weights=choice.get("gate_weights", True))


def default_pointwise(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *, act: bool,
                      gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The Triton 1x1 pass a shape takes when the tuning file does not name it: the streaming kernel where
    `streaming.default_for` says so, `kernels.pointwise`'s tiles elsewhere."""
    if streaming.default_for(x, weight_t.shape[1], gate is not None):
        return streaming.pointwise_streaming(x, weight_t, bias, act=act, residual=residual)
    return kernels.pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual)


def excitation(sums: torch.Tensor, pixels: int, reduce: torch.nn.Conv2d, expand: torch.nn.Conv2d,
               use_triton: bool | None = None, *, tf32: bool = False) -> torch.Tensor:
    """The squeeze-excitation gate (N, C) from the channel sums of an activation (N, C), in the sums' dtype
    (float32; float64 for a float64 model): sigmoid(expand(silu(reduce(sums / pixels)))). On the Triton path one
    launch (`effnet.fast.excitation`; with `tf32`, for 16-bit activations, its products on TF32 whatever
    PyTorch's setting); in PyTorch (and while `torch.compile` traces, which fuses it itself) four kernels, the
    mean's 1/pixels folded into the first product (`addmm`'s alpha). `optimize_for_inference` keeps the SE in
    float32 or wider, so the casts are no-ops."""
    if _triton(sums, use_triton) and not torch.compiler.is_compiling():
        return fused_excitation(sums.float().contiguous(), pixels, reduce.weight.flatten(1).float().contiguous(),
                                reduce.bias.float(), expand.weight.flatten(1).float().contiguous(),
                                expand.bias.float(), tf32=tf32)
    dtype = at_least_float32(sums.dtype)
    hidden = torch.addmm(reduce.bias.to(dtype), sums.to(dtype), reduce.weight.flatten(1).to(dtype).t(),
                         alpha=1.0 / pixels)
    hidden = torch.addmm(expand.bias.to(dtype), F.silu(hidden), expand.weight.flatten(1).to(dtype).t())
    return torch.sigmoid(hidden)  # (N, C)
