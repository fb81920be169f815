"""A Triton kernel for the network's stem: the input cast, the k x k conv and its SiLU in one pass.

Unfused, the fast model's first operations are three passes over the two largest tensors at the
input end: the cast of the user's float32 NCHW batch to the model's dtype, channels-last (a full
copy), the stem convolution (3 -> 32 channels, 3 x 3, stride 2 for B0; cuDNN runs it far from its
memory floor) and a separate SiLU. This kernel reads the input as the user passes it (any float
dtype, any layout) and writes SiLU(conv(x) + bias) once, in the model's dtype, channels-last: one
read of the input, one write of the output.

It is a direct convolution: a program computes a tile of output pixels x out-channels, and for
each (in-channel, kh, kw) loads one input value per pixel and adds its outer product with that
tap's weights. The stem's few in-channels (3) leave no reduction worth the matrix units. Each
input value is rounded to the model's dtype as it is loaded, as the unfused cast rounds it, so both
paths compute the same function. `optimize_for_inference` fuses the stem by default (`fuse_stem=False`: the
three PyTorch passes).

A second form of the same pass takes the conv as one matrix product on the tensor cores (`_stem_dot_kernel`):
each program gathers its pixels' CIN x k x k input values (27 for a 3 x 3 stem on RGB) into a (pixels, taps)
tile, padded to a power of two, and multiplies it by the (taps, out-channels) weights. Run 8 (an H200) timed
the direct kernel far over its memory floor: B4's stem 1.34 ms per forward of batch 128 (its output, written
once, is 0.44 GB: 0.1 ms at the card's bandwidth), B0's 0.31 ms of 5.9. Compiled for sm_90
(`benchmarks/compile_check.py`), the direct kernel issues the 27 x out-channels multiply-adds of each pixel one
by one: about 68 warp instructions per output pixel for B0's stem and 168 for B4's (at 145 registers, 12 warps
resident), the product form 17 and 24 (wgmma, no spill). Run 9 (an H200) timed it at 132 against 304 us on B0's
stem (batch 256) and 280 against 1,344 on B4's (batch 128), 128 pixels a program on four warps the fastest of
four tile sets on both. So on a GPU a 16-bit stem takes the product form by default; a float32 one (its
product in IEEE float32, not timed) and Triton's interpreter keep the direct kernel. A tuning file still picks
either per stem shape (op `stem`, kernel `direct` or `dot`; `benchmarks/stem_sweep.py` times both against the
default).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.fast import custom_ops, ops, tuning
from effnet.fast.grids import cdiv, next_power_of_2
from effnet.fast.kernels import INTERPRET, _pow2, act_mode, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _silu, _tap

    @triton.jit
    def _stem_kernel(x_ptr, w_ptr, b_ptr, y_ptr,
                     H, W, C, HO, WO, M, stride, pad_h, pad_w,
                     sxn, sxc, sxh, sxw,
                     CIN: tl.constexpr, K: tl.constexpr, ACT: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_C: tl.constexpr):
        # One program: BLOCK_P output pixels, consecutive in (image, row, column) order so that a
        # tile may span rows and images (no tail per row), x BLOCK_C out-channels.
        m = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,) of M = images x HO x WO
        m_ok = m < M
        wo = m % WO
        ho = (m // WO) % HO
        n = m // (WO * HO)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for ci in tl.static_range(CIN):  # a few in-channels (3): all CIN x K x K taps unrolled
            for kh in tl.static_range(K):
                for kw in tl.static_range(K):
                    hi, wi, ok = _tap(ho, wo, m_ok, kh, kw, stride, pad_h, pad_w, H, W)  # (BP,) each
                    x = tl.load(x_ptr + n * sxn + ci * sxc + hi * sxh + wi * sxw, mask=ok, other=0.0)  # (BP,)
                    # Rounded to the model's dtype as the unfused input cast would store it.
                    x = x.to(w_ptr.dtype.element_ty).to(tl.float32)
                    w = tl.load(w_ptr + ((ci * K + kh) * K + kw) * C + c, mask=c_ok, other=0.0)  # (BC,)
                    acc += x[:, None] * w.to(tl.float32)[None, :]
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        acc = _silu(acc, ACT)
        # The output is channels-last and allocated here: pixel m's channels start at m * C.
        tl.store(y_ptr + m[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & c_ok[None, :])

    @triton.jit
    def _stem_dot_kernel(x_ptr, w_ptr, b_ptr, y_ptr,
                         H, W, C, HO, WO, M, stride, pad_h, pad_w,
                         sxn, sxc, sxh, sxw,
                         CIN: tl.constexpr, K: tl.constexpr, TAPS: tl.constexpr, ACT: tl.constexpr,
                         IEEE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_P output pixels in (image, row, column) order x BLOCK_C out-channels, as
        # `_stem_kernel`, the taps gathered into a (BLOCK_P, TAPS) tile (TAPS >= CIN * K * K, a power of two;
        # the rest zero) and multiplied by the (TAPS, BLOCK_C) weights on the tensor cores.
        m = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
        m_ok = m < M
        wo = m % WO
        ho = (m // WO) % HO
        n = m // (WO * HO)
        t = tl.arange(0, TAPS)  # (T,): tap t is (in-channel, kh, kw) = (t // K^2, t // K % K, t % K)
        t_ok = t < CIN * K * K
        hi = ho[:, None] * stride - pad_h + ((t // K) % K)[None, :]  # (BP, T)
        wi = wo[:, None] * stride - pad_w + (t % K)[None, :]
        ok = m_ok[:, None] & t_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        a = tl.load(x_ptr + n[:, None] * sxn + (t // (K * K))[None, :] * sxc + hi * sxh + wi * sxw, mask=ok,
                    other=0.0)
        a = a.to(w_ptr.dtype.element_ty)  # rounded to the model's dtype as the unfused input cast would store it
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        w = tl.load(w_ptr + t[:, None] * C + c[None, :], mask=t_ok[:, None] & c_ok[None, :], other=0.0)  # (T, BC)
        acc = _dot(a, w, IEEE)
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        acc = _silu(acc, ACT)
        tl.store(y_ptr + m[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & c_ok[None, :])


def default_kernel(dtype: torch.dtype) -> str:
    """The stem's kernel where no tuning file names one: the product form ('dot') for 16-bit weights on a GPU
    (run 9, module docstring), else the direct kernel ('direct': float32, and Triton's interpreter)."""
    return "dot" if not INTERPRET and dtype in (torch.bfloat16, torch.float16) else "direct"


def _launch(x: torch.Tensor, weight_cols: torch.Tensor, bias: torch.Tensor, *, kernel_size: int, stride: int,
            padding: tuple[int, int], output_size: tuple[int, int]) -> torch.Tensor:
    """The stem pass over NCHW-shaped `x` (any strides) with weights laid out (in*k*k, out): the kernel the
    tuning file names for this stem, else the tensor-core form for 16-bit weights on a GPU (module docstring),
    else the direct kernel."""
    batch, in_channels, height, width = x.shape
    out_h, out_w = output_size
    y = torch.empty((batch, weight_cols.shape[1], out_h, out_w), device=x.device, dtype=weight_cols.dtype,
                    memory_format=torch.channels_last)
    choice = tuning.lookup("stem", in_channels=in_channels, out_channels=weight_cols.shape[1],
                           kernel_size=kernel_size, stride=stride, height=height, width=width)
    if (choice["kernel"] if choice is not None else default_kernel(weight_cols.dtype)) == "dot":
        return _launch_dot(x, weight_cols, bias, y, kernel_size=kernel_size, stride=stride, padding=padding,
                           tiles=tuple(choice["tiles"]) if choice is not None else ())
    return _launch_direct(x, weight_cols, bias, y, kernel_size=kernel_size, stride=stride, padding=padding)


def _launch_direct(x: torch.Tensor, weight_cols: torch.Tensor, bias: torch.Tensor, y: torch.Tensor, *,
                   kernel_size: int, stride: int, padding: tuple[int, int]) -> torch.Tensor:
    """`_stem_kernel`, the direct convolution, into channels-last `y`."""
    batch, in_channels, height, width = x.shape
    out_channels, (out_h, out_w) = weight_cols.shape[1], y.shape[2:]
    pixels = batch * out_h * out_w
    # 4096 float32 accumulators a program (32 a thread at 4 warps) whatever the channel count.
    block_c = _pow2(out_channels, 16, 64)
    block_p = 32 if INTERPRET else 4096 // block_c
    grid = (cdiv(pixels, block_p), cdiv(out_channels, block_c))
    _stem_kernel[grid](x, weight_cols, bias, y, height, width, out_channels, out_h, out_w, pixels,
                       stride, padding[0], padding[1], x.stride(0), x.stride(1), x.stride(2), x.stride(3),
                       CIN=in_channels, K=kernel_size, ACT=act_mode(True, y), BLOCK_P=block_p, BLOCK_C=block_c,
                       **({} if INTERPRET else {"num_warps": 4}))
    return y


def _launch_dot(x: torch.Tensor, weight_cols: torch.Tensor, bias: torch.Tensor, y: torch.Tensor, *,
                kernel_size: int, stride: int, padding: tuple[int, int], tiles: tuple[int, ...] = ()) -> torch.Tensor:
    """`_stem_dot_kernel` into channels-last `y`: `tiles` (BLOCK_P, num_warps), or () for 128 pixels on 4 warps
    (16 pixels under the interpreter). The taps pad to a power of two, at least 16 (`tl.dot`'s least)."""
    batch, in_channels, height, width = x.shape
    out_channels, (out_h, out_w) = weight_cols.shape[1], y.shape[2:]
    block_p, warps = tiles or (128, 4)
    block_c = _pow2(out_channels, 16, 64)
    pixels = batch * out_h * out_w
    grid = (cdiv(pixels, 16 if INTERPRET else block_p), cdiv(out_channels, block_c))
    _stem_dot_kernel[grid](x, weight_cols, bias, y, height, width, out_channels, out_h, out_w, pixels, stride,
                           padding[0], padding[1], x.stride(0), x.stride(1), x.stride(2), x.stride(3),
                           CIN=in_channels, K=kernel_size, TAPS=max(16, next_power_of_2(weight_cols.shape[0])),
                           ACT=act_mode(True, y), IEEE=weight_cols.dtype == torch.float32,
                           BLOCK_P=16 if INTERPRET else block_p, BLOCK_C=block_c,
                           **({} if INTERPRET else {"num_warps": warps}))
    return y


def stem(x: torch.Tensor, weight: torch.Tensor, weight_cols: torch.Tensor, bias: torch.Tensor, *, stride: int,
         same: bool, use_triton: bool | None = None) -> torch.Tensor:
    """SiLU(conv(x cast to the weights' dtype) + bias), channels-last, in the weights' dtype.

    `x` is the network's input as given (any float dtype and layout); `weight` is the folded stem
    conv's (out, in, k, k), `weight_cols` the same values laid out (in*k*k, out). Padding is TF
    "same" with `same`, else symmetric `k // 2`. `use_triton` as in `effnet.fast.ops`.
    """
    if x.dim() != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"the model takes a batch of images shaped (N, {weight.shape[1]}, H, W), "
                         f"got {tuple(x.shape)}")
    kernel_size = weight.shape[-1]
    if ops._triton(x, use_triton, ops._widened(x, weight.shape[0])):
        output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
        if torch.compiler.is_compiling():
            return custom_ops.fused_stem(x, weight_cols, bias, kernel_size, stride, list(padding), list(output_size))
        return _launch(x, weight_cols, bias, kernel_size=kernel_size, stride=stride, padding=padding,
                       output_size=output_size)
    # The unfused model's first steps: cast and change layout, pad, convolve, SiLU.
    x = x.to(dtype=weight.dtype, memory_format=torch.channels_last)
    y = ops.conv2d_as_kernels_pad(x, weight, bias, stride=stride, same=same)  # (N, out, HO, WO)
    return F.silu(y, inplace=True).contiguous(memory_format=torch.channels_last)
