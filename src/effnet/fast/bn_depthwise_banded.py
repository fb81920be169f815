"""The training depthwise conv on tensor cores, pass by pass, for the layers where a sweep finds it faster.

`effnet.fast.banded` computes a depthwise conv as k banded matrix products per kernel row, batched over channels
(about a quarter to a half of the Triton tap kernel's instructions per output, compiled for sm_90). Each of
`bn_depthwise`'s passes takes tensor cores here, in the shape of its cuDNN form (`bn_depthwise_cudnn`), whose
element-wise passes they share:

- `forward`: the banded conv of the activation a, then its output's statistics in one pass;
- `input_grad`: the gradient reaching a is, at stride 1, the conv of g (the gradient reaching the raw output)
  by the kernel turned half a turn, padded k - 1 - p before: a banded conv too; strided, per kernel row g's rows
  that land on an input row times a banded matrix of that row's taps (`transposed_conv`); then one pass for the
  SiLU's and bn1's derivatives with dscale and dshift;
- `weight_grad`: for each kernel row, the conv's input rows against g's as a product summed over the rows (a
  `tl.dot` batched over channels, K = the rows), then each tap the sum along one band of that product; on g
  written by a pass of its own (`bn_depthwise_cudnn.output_gradient`) unless the input gradient's form needs it
  anyway.

A tuning entry with kernel `banded` (no tiles: the kernels' defaults) for `bn_depthwise`,
`bn_depthwise_input_grad` or `bn_depthwise_weight_grad` (3 x 3 and 5 x 5) picks the form per layer shape
(`benchmarks/bn_depthwise_sweep.py` times them as "fwd banded", "dx banded" and "dw banded"). Any padding: the
banded kernels mask what lies outside the map, as the Triton kernels do. The banded tables are made from the taps
at every call (the weights change every step): about k C 32 x 32 values a layer.
"""
from __future__ import annotations

import torch

from effnet.fast import banded
from effnet.fast.bn_depthwise_cudnn import activation_backward, statistics
from effnet.fast.grids import cdiv, next_power_of_2
from effnet.fast.kernels import INTERPRET, map_alignment, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _multiple

    @triton.jit
    def _tap_sums(acc, w, j, K: tl.constexpr, STRIDE: tl.constexpr, part_ptr, row, c, c_ok, C):
        """Store the K taps of one kernel row: tap d sums the (w, j) products on the band w = STRIDE j + d."""
        for d in tl.static_range(K):
            on_band = w[None, :, None] == STRIDE * j[None, None, :] + d
            tl.store(part_ptr + (row + d) * C + c, tl.sum(tl.sum(tl.where(on_band, acc, 0.0), axis=2), axis=1),
                     mask=c_ok)

    @triton.jit
    def _banded_weight_grad_kernel(a_ptr, g_ptr, part_ptr, H, W, C, HO, WO, pad_h, pad_w, rows_per_program, ROWS,
                                   san, sah, saw, sgn, sgh, sgw,
                                   K: tl.constexpr, STRIDE: tl.constexpr, BLOCK_R: tl.constexpr,
                                   BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr,
                                   IEEE: tl.constexpr):
        # One program: a column tile's VALID whole output columns x BLOCK_C channels, over a chunk of output rows
        # (image and row flattened). For each kernel row i, P_i = A_i^T G (the tile's BLOCK_W input columns against
        # its output columns, summed over the rows, a `tl.dot` batched over channels); tap (i, d) is the sum of P_i
        # along the band w = STRIDE j + d. G is zero past the whole outputs, so P_i holds no partial ones.
        C, san, sah, saw = _multiple(C, ALIGN), _multiple(san, ALIGN), _multiple(sah, ALIGN), _multiple(saw, ALIGN)
        sgn, sgh, sgw = _multiple(sgn, ALIGN), _multiple(sgh, ALIGN), _multiple(sgw, ALIGN)
        BLOCK_O: tl.constexpr = BLOCK_W // STRIDE
        VALID: tl.constexpr = (BLOCK_W - K) // STRIDE + 1
        j0 = tl.program_id(0) * VALID
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        w = tl.arange(0, BLOCK_W)
        j = tl.arange(0, BLOCK_O)
        wi, wo = j0 * STRIDE - pad_w + w, j0 + j
        cc = c[:, None, None]
        a_cols = (wi >= 0) & (wi < W)
        g_cols = (j < VALID) & (wo < WO)
        acc0 = tl.zeros([BLOCK_C, BLOCK_W, BLOCK_O], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK_C, BLOCK_W, BLOCK_O], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_C, BLOCK_W, BLOCK_O], dtype=tl.float32)
        acc3 = tl.zeros([BLOCK_C, BLOCK_W, BLOCK_O], dtype=tl.float32)
        acc4 = tl.zeros([BLOCK_C, BLOCK_W, BLOCK_O], dtype=tl.float32)
        first = tl.program_id(2) * rows_per_program
        last = tl.minimum(first + rows_per_program, ROWS)
        for start in range(first, last, BLOCK_R):
            r = start + tl.arange(0, BLOCK_R)
            r_ok = r < last
            n, ho = r // HO, r % HO
            g = tl.load(g_ptr + n[None, :, None] * sgn + ho[None, :, None] * sgh + wo[None, None, :] * sgw + cc,
                        mask=c_ok[:, None, None] & r_ok[None, :, None] & g_cols[None, None, :], other=0.0)
            for i in tl.static_range(K):
                hi = ho * STRIDE + (i - pad_h)
                rows_ok = r_ok & (hi >= 0) & (hi < H)
                # (BLOCK_C, BLOCK_W, BLOCK_R): the input rows i below each output row's top, transposed
                a = tl.load(a_ptr + n[None, None, :] * san + hi[None, None, :] * sah + wi[None, :, None] * saw + cc,
                            mask=c_ok[:, None, None] & a_cols[None, :, None] & rows_ok[None, None, :], other=0.0)
                if i == 0:
                    acc0 += _dot(a, g, IEEE)
                elif i == 1:
                    acc1 += _dot(a, g, IEEE)
                elif i == 2:
                    acc2 += _dot(a, g, IEEE)
                elif i == 3:
                    acc3 += _dot(a, g, IEEE)
                else:
                    acc4 += _dot(a, g, IEEE)
        part_ptr += (tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)) * K * K * C
        _tap_sums(acc0, w, j, K, STRIDE, part_ptr, 0, c, c_ok, C)
        _tap_sums(acc1, w, j, K, STRIDE, part_ptr, K, c, c_ok, C)
        _tap_sums(acc2, w, j, K, STRIDE, part_ptr, 2 * K, c, c_ok, C)
        if K > 3:
            _tap_sums(acc3, w, j, K, STRIDE, part_ptr, 3 * K, c, c_ok, C)
            _tap_sums(acc4, w, j, K, STRIDE, part_ptr, 4 * K, c, c_ok, C)


    @triton.jit
    def _banded_transposed_kernel(g_ptr, u_ptr, da_ptr, H, W, C, HO, WO, ROWS, pad_h, first_column, j_back,
                                  sgn, sgh, sgw, sdn, sdh, sdw,
                                  K: tl.constexpr, STRIDE: tl.constexpr, WHOLE: tl.constexpr, BLOCK_R: tl.constexpr,
                                  BLOCK_G: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                                  ALIGN: tl.constexpr, IEEE: tl.constexpr):
        # The input gradient of a strided conv: da[h, w] sums g[r, j] W[i, d] over h = STRIDE r + i - pad_h,
        # w = STRIDE j + d - pad_w. One program: BLOCK_R input rows (image and row flattened) x WHOLE input columns
        # from w0 x BLOCK_C channels, from g's BLOCK_G columns from j0 = w0 / STRIDE - ...: d = K - 1 + u - STRIDE v
        # for the tile's column u and g's column v, so each kernel row is a product with one banded matrix U.
        C, sgn, sgh, sgw = _multiple(C, ALIGN), _multiple(sgn, ALIGN), _multiple(sgh, ALIGN), _multiple(sgw, ALIGN)
        sdn, sdh, sdw = _multiple(sdn, ALIGN), _multiple(sdh, ALIGN), _multiple(sdw, ALIGN)
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        j0 = tl.program_id(1) * (WHOLE // STRIDE) - j_back
        w0 = tl.program_id(1) * WHOLE + first_column
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        n, h = rows // H, rows % H
        r_ok, c_ok = rows < ROWS, c < C
        v, u = tl.arange(0, BLOCK_G), tl.arange(0, BLOCK_W)
        j = j0 + v
        cc = c[:, None, None]
        g_ok = c_ok[:, None, None] & ((j >= 0) & (j < WO))[None, None, :]
        u_offsets = (c[:, None, None] * BLOCK_G + v[None, :, None]) * BLOCK_W + u[None, None, :]  # U (K, C, G, W)
        acc = tl.zeros([BLOCK_C, BLOCK_R, BLOCK_W], dtype=tl.float32)
        for i in tl.static_range(K):
            shifted = h + pad_h - i  # STRIDE r, where it divides
            r = shifted // STRIDE
            ok = r_ok & (shifted >= 0) & (shifted % STRIDE == 0) & (r < HO)
            grad = tl.load(g_ptr + n[None, :, None] * sgn + r[None, :, None] * sgh + j[None, None, :] * sgw + cc,
                           mask=g_ok & ok[None, :, None], other=0.0)
            band = tl.load(u_ptr + i * C * BLOCK_G * BLOCK_W + u_offsets, mask=c_ok[:, None, None], other=0.0)
            acc += _dot(grad, band, IEEE)
        w = w0 + u
        out_ok = c_ok[:, None, None] & r_ok[None, :, None] & ((u < WHOLE) & (w >= 0) & (w < W))[None, None, :]
        tl.store(da_ptr + n[None, :, None] * sdn + h[None, :, None] * sdh + w[None, None, :] * sdw + cc,
                 acc.to(da_ptr.dtype.element_ty), mask=out_ok)

def forward(a: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
            output_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): the banded depthwise conv of a (the activation, channels-last) by the (k * k, C) taps
    (padding top and left `padding`, the output `output_size`), then y's float32 batch mean and biased
    variance in one pass (`bn_depthwise_cudnn.statistics`)."""
    y, _ = banded.banded_depthwise(a, taps, None, kernel_size=kernel_size, stride=stride, padding=padding,
                                   output_size=output_size, act=False, pool=False)
    return y, *statistics(y)


def input_grad(g: torch.Tensor, taps: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None,
               shift: torch.Tensor | None, kernel_size: int, stride: int, padding: tuple[int, int],
               act: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, daffine), daffine (2, C) dscale and dshift, empty without scale: da, the gradient reaching the
    conv's input (at stride 1 the banded conv of g by the turned taps; strided, `transposed_conv`), then dx = da *
    act'(z) * scale with z = x * scale + shift, and daffine in one pass."""
    k = kernel_size
    if stride == 1:
        da, _ = banded.banded_depthwise(g.to(x.dtype), taps, None, kernel_size=k, stride=1,
                                        padding=(k - 1 - padding[0], k - 1 - padding[1]),
                                        output_size=tuple(x.shape[2:]), act=False, pool=False, flip=True)
    else:
        da = transposed_conv(g.to(x.dtype), taps, tuple(x.shape[2:]), k, stride, padding)
    return activation_backward(da, x, scale, shift, act)


def transposed_tables(taps: torch.Tensor, kernel_size: int, stride: int, block_g: int, block_w: int,
                      dtype: torch.dtype) -> torch.Tensor:
    """(k, C, block_g, block_w) in `dtype`: U[i, c, v, u] = taps[i k + d, c] with d = k - 1 + u - stride v where
    0 <= d < k, else zero (`_banded_transposed_kernel`'s bands)."""
    index = banded.band_index(kernel_size, block_g, block_w, kernel_size - 1, -stride, 1, False, taps.device)
    return banded.gather_tables(taps, index, dtype)


def transposed_conv(g: torch.Tensor, taps: torch.Tensor, input_size: tuple[int, int], kernel_size: int, stride: int,
                    padding: tuple[int, int], tiles: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """The gradient reaching a strided depthwise conv's input (channels-last, g's dtype) from g, the gradient
    reaching its output, on tensor cores: per kernel row, g's rows that land on an input row (every stride-th)
    times a banded matrix of that row's taps. `tiles` = (BLOCK_G, BLOCK_R, BLOCK_C, num_warps): BLOCK_G of g's
    columns give stride (BLOCK_G - 1) - k + 2 input columns whole (rounded down to a multiple of the stride)."""
    batch, channels, out_h, out_w = g.shape
    height, width = input_size
    k = kernel_size
    block_g, block_r, block_c, warps = tiles or ((16, 16, 16, 4) if INTERPRET else (16, 32, 8, 8))
    whole = (stride * (block_g - 1) - k + 2) // stride * stride
    if whole < stride:
        raise ValueError(f"{block_g} columns of g give no whole input column of a {k}x{k}, stride-{stride} conv")
    block_w = next_power_of_2(whole)
    back = -(-(k - 1 - padding[1]) // stride)  # g's columns before the first tile's: it starts at or before column 0
    first_column = k - 1 - padding[1] - stride * back
    tables = transposed_tables(taps, k, stride, block_g, block_w, g.dtype)
    da = torch.empty((batch, channels, height, width), device=g.device, dtype=g.dtype,
                     memory_format=torch.channels_last)
    rows = batch * height
    grid = (cdiv(rows, block_r), cdiv(width - first_column, whole), cdiv(channels, block_c))
    _banded_transposed_kernel[grid](
        g, tables, da, height, width, channels, out_h, out_w, rows, padding[0], first_column, back,
        g.stride(0), g.stride(2), g.stride(3), da.stride(0), da.stride(2), da.stride(3), K=k, STRIDE=stride,
        WHOLE=whole, BLOCK_R=block_r, BLOCK_G=block_g, BLOCK_W=block_w, BLOCK_C=block_c, ALIGN=map_alignment(g, da),
        IEEE=g.dtype == torch.float32, **({} if INTERPRET else {"num_warps": warps}))
    return da


# Output rows a weight-gradient program walks at least (its (k*k, C) partial sums against the rows it reads), and
# the programs wanted per multiprocessor.
_MIN_ROWS = 64
_WAVES = 4


def weight_grad(g: torch.Tensor, conv_input: torch.Tensor, kernel_size: int, stride: int,
                padding: tuple[int, int], tiles: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """The (k * k, C) float32 gradient of the taps of a 3 x 3 or 5 x 5 conv, from g (the gradient reaching the
    conv's output) and the conv's input (a, or x without an affine map), on tensor cores: per kernel row the
    input rows against g's, summed over the rows, then along the band; each program's sums are added up by
    PyTorch (deterministic). `tiles` = (BLOCK_W, BLOCK_R, BLOCK_C, num_warps); by default (16 x stride, 16, 8, 8):
    compiled for sm_90 under Triton 3.6, 94-208 registers (3 x 3 stride 1 to 5 x 5 stride 2), no spill, where 32
    rows a step spill the 5 x 5 ones."""
    if kernel_size not in (3, 5):
        raise ValueError(f"the banded weight gradient takes 3x3 and 5x5 convs, got {kernel_size}x{kernel_size}")
    batch, channels, height, width = conv_input.shape
    g = g.to(conv_input.dtype)
    out_h, out_w = g.shape[2:]
    width_tile, block_r, block_c, warps = tiles or ((32, 16, 16, 4) if INTERPRET else (16 * stride, 16, 8, 8))
    if not banded.valid_tile(width_tile, kernel_size, stride):
        raise ValueError(f"banded weight-gradient tiles must be a power of two, at least 16 x the stride ({stride}) "
                         f"and as wide as the kernel ({kernel_size}), got {width_tile}")
    column_tiles = cdiv(out_w, banded.whole_outputs(width_tile, kernel_size, stride))
    channel_blocks = cdiv(channels, block_c)
    rows = batch * out_h
    if INTERPRET:
        rows_per_program = 2 * block_r
    else:
        wanted = _WAVES * torch.cuda.get_device_properties(g.device).multi_processor_count
        chunks = max(1, min(wanted // (column_tiles * channel_blocks), cdiv(rows, _MIN_ROWS)))
        rows_per_program = cdiv(cdiv(rows, chunks), block_r) * block_r
    chunks = cdiv(rows, rows_per_program)
    parts = torch.empty((chunks * column_tiles, kernel_size * kernel_size, channels), device=g.device,
                        dtype=torch.float32)
    _banded_weight_grad_kernel[(column_tiles, channel_blocks, chunks)](
        conv_input, g, parts, height, width, channels, out_h, out_w, padding[0], padding[1],
        rows_per_program, rows, conv_input.stride(0), conv_input.stride(2), conv_input.stride(3), g.stride(0),
        g.stride(2), g.stride(3), K=kernel_size, STRIDE=stride, BLOCK_R=block_r, BLOCK_W=width_tile,
        BLOCK_C=block_c, ALIGN=map_alignment(conv_input, g), IEEE=conv_input.dtype == torch.float32,
        **({} if INTERPRET else {"num_warps": warps}))
    return parts.sum(0)
