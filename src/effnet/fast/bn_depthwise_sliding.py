"""The training depthwise conv's forward and input gradient on the sliding window (`effnet.fast.depthwise_sliding`):
a tuning-file choice per layer shape (the input gradient at stride 1), as the cuDNN and banded forms are
(`bn_depthwise_cudnn`, `bn_depthwise_banded`), with the fused Triton kernels' epilogues.

The forward slides down the activation a's rows as the inference kernel does (each input row's k shifted tiles
loaded once, the k² taps in registers) and stores each completed output row y (rounded to a's dtype); each
(column, channel) lane keeps a running mean and sum of squared deviations of the y it stored (Welford's update,
in float32), merged per program at the end into the per-block (sum, m2) rows `bn_stats.merge_moments` takes, as
the tiled forward's epilogue gives them. The input gradient is, at stride 1, the conv of g by the turned kernel
padded k - 1 - pad; as each row of da completes it applies the SiLU's and the affine map's derivatives (dx = da *
act'(z) * scale, z = x * scale + shift) and adds dscale and dshift per lane: da is never written, as in the tiled
kernel. `benchmarks/bn_depthwise_sweep.py` times both ("fwd sliding", "dx sliding") and records them where they
win (tuning kernel `sliding` for `bn_depthwise` and `bn_depthwise_input_grad`, no tiles: `depthwise_sliding`'s
default tiles).
"""
from __future__ import annotations

import torch

from effnet.fast import bn_stats, kernels
from effnet.fast.custom_ops import channels_last_empty
from effnet.fast.depthwise_sliding import default_tiles, misfit
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.depthwise_sliding import _first_rows, _inside, _step, _store_row, _strip, _taps
    from effnet.fast.kernels import _multiple, _sigmoid

    @triton.jit
    def _forward_rows(a_ptr, w_ptr, y_ptr, n, top, out_rows, wo, wo_ok, c, c_ok, H, W, C, pad_h, pad_w,
                      san, sah, saw, syn, syh, syw, K: tl.constexpr, STRIDE: tl.constexpr, MASKED: tl.constexpr,
                      EVEN_C: tl.constexpr, PREFETCH: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """The program's output rows, stored; returns each lane's running mean and sum of squared deviations of
        the values it stored (BW, BC) each, float32."""
        taps = _taps(w_ptr, c, c_ok, C, K, EVEN_C, False)
        zero = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc = (zero, zero, zero, zero, zero)
        mean, m2 = zero, zero
        base = a_ptr + n * san + c[None, :]
        ahead = _first_rows(base, top, pad_h, H, sah, wo, wo_ok, c_ok, W, pad_w, saw, K, STRIDE, MASKED, EVEN_C,
                            PREFETCH, BLOCK_W, BLOCK_C)
        for s in range(out_rows + (K - 1) // STRIDE):
            ho = top - (K - 1) // STRIDE + s
            acc, ahead = _step(acc, ahead, taps, base, ho, pad_h, H, sah, wo, wo_ok, c_ok, W, pad_w, saw, K, STRIDE,
                               MASKED, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
            if ho >= top:
                y = acc[0].to(y_ptr.dtype.element_ty)
                _store_row(y_ptr + n * syn + ho * syh + wo[:, None] * syw + c[None, :], y, wo_ok, c_ok, MASKED,
                           EVEN_C)
                value = y.to(tl.float32)  # the statistics of y as stored
                delta = value - mean
                mean += delta / (ho - top + 1).to(tl.float32)
                m2 += delta * (value - mean)
            acc = (acc[1], acc[2], acc[3], acc[4], zero)
        return mean, m2

    @triton.jit
    def _forward_kernel(a_ptr, w_ptr, y_ptr, sums_ptr, m2_ptr, H, W, C, HO, WO, pad_h, pad_w,
                        san, sah, saw, syn, syh, syw, K: tl.constexpr, STRIDE: tl.constexpr, PREFETCH: tl.constexpr,
                        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, ROWS: tl.constexpr, ALIGN: tl.constexpr,
                        EVEN_C: tl.constexpr):
        # Program (image, row band, column block) x channel block, as `depthwise_sliding._sliding_kernel`. Its
        # lanes' moments merged: row `pid` of sums (the sum of its values) and m2 (their squared deviations from
        # the block's mean), the block being its rows x its columns inside the output.
        C, san, sah, saw = _multiple(C, ALIGN), _multiple(san, ALIGN), _multiple(sah, ALIGN), _multiple(saw, ALIGN)
        syn, syh, syw = _multiple(syn, ALIGN), _multiple(syh, ALIGN), _multiple(syw, ALIGN)
        n, top, out_rows, left, wo, wo_ok, c, c_ok = _strip(HO, WO, C, ROWS, BLOCK_W, BLOCK_C)
        pid = tl.program_id(0)
        if _inside(left, pad_w, W, WO, K, STRIDE, BLOCK_W):
            mean, m2 = _forward_rows(a_ptr, w_ptr, y_ptr, n, top, out_rows, wo, wo_ok, c, c_ok, H, W, C, pad_h,
                                     pad_w, san, sah, saw, syn, syh, syw, K, STRIDE, False, EVEN_C, PREFETCH, BLOCK_W,
                                     BLOCK_C)
        else:
            mean, m2 = _forward_rows(a_ptr, w_ptr, y_ptr, n, top, out_rows, wo, wo_ok, c, c_ok, H, W, C, pad_h,
                                     pad_w, san, sah, saw, syn, syh, syw, K, STRIDE, True, EVEN_C, PREFETCH, BLOCK_W,
                                     BLOCK_C)
        rows = out_rows.to(tl.float32)
        lanes = wo_ok[:, None]
        total = tl.sum(tl.where(lanes, mean, 0.0), axis=0) * rows  # (BC,)
        block_mean = total / (rows * tl.sum(wo_ok.to(tl.float32), axis=0))
        spread = tl.where(lanes, mean - block_mean[None, :], 0.0)
        tl.store(sums_ptr + pid * C + c, total, mask=c_ok)
        tl.store(m2_ptr + pid * C + c, tl.sum(tl.where(lanes, m2, 0.0), axis=0) + rows * tl.sum(spread * spread,
                                                                                                   axis=0),
                 mask=c_ok)

    @triton.jit
    def _input_grad_rows(g_ptr, w_ptr, x_ptr, dx_ptr, scale, shift, n, top, out_rows, wi, wi_ok, c, c_ok, HO, WO,
                         C, pad_h, pad_w, sgn, sgh, sgw, sxn, sxh, sxw, K: tl.constexpr, AFFINE: tl.constexpr,
                         ACT: tl.constexpr, MASKED: tl.constexpr, EVEN_C: tl.constexpr, PREFETCH: tl.constexpr,
                         BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """The program's rows of dx, stored; returns each lane's sums of dz * x and dz (dscale, dshift), (BW, BC)
        float32 each (zeros without AFFINE). g (HO, WO) is the map here, padded k - 1 - pad; the taps turned."""
        taps = _taps(w_ptr, c, c_ok, C, K, EVEN_C, True)
        zero = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc = (zero, zero, zero, zero, zero)
        dscale, dshift = zero, zero
        base = g_ptr + n * sgn + c[None, :]
        lanes = wi_ok[:, None] & c_ok[None, :]
        ahead = _first_rows(base, top, pad_h, HO, sgh, wi, wi_ok, c_ok, WO, pad_w, sgw, K, 1, MASKED, EVEN_C, PREFETCH,
                            BLOCK_W, BLOCK_C)
        for s in range(out_rows + K - 1):  # down g's rows
            h = top - (K - 1) + s  # the row of da this step completes
            acc, ahead = _step(acc, ahead, taps, base, h, pad_h, HO, sgh, wi, wi_ok, c_ok, WO, pad_w, sgw, K, 1,
                               MASKED, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
            if h >= top:
                dz = acc[0]
                if AFFINE:
                    pointers = x_ptr + n * sxn + h * sxh + wi[:, None] * sxw + c[None, :]
                    if MASKED:
                        x = tl.load(pointers, mask=lanes, other=0.0).to(tl.float32)
                    elif EVEN_C:
                        x = tl.load(pointers).to(tl.float32)
                    else:
                        x = tl.load(pointers, mask=c_ok[None, :], other=0.0).to(tl.float32)
                    if ACT:
                        z = x * scale[None, :] + shift[None, :]
                        sig = _sigmoid(z, ACT)
                        dz = dz * (sig * (1.0 + z * (1.0 - sig)))
                    dz = tl.where(lanes, dz, 0.0)
                    dscale += dz * x
                    dshift += dz
                    dz = dz * scale[None, :]
                _store_row(dx_ptr + n * sxn + h * sxh + wi[:, None] * sxw + c[None, :],
                           dz.to(dx_ptr.dtype.element_ty), wi_ok, c_ok, MASKED, EVEN_C)
            acc = (acc[1], acc[2], acc[3], acc[4], zero)
        return dscale, dshift

    @triton.jit
    def _input_grad_kernel(g_ptr, w_ptr, x_ptr, scale_ptr, shift_ptr, dx_ptr, dscale_ptr, dshift_ptr, H, W, C, HO,
                           WO, pad_h, pad_w, sgn, sgh, sgw, sxn, sxh, sxw, K: tl.constexpr, AFFINE: tl.constexpr,
                           ACT: tl.constexpr, PREFETCH: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                           ROWS: tl.constexpr, ALIGN: tl.constexpr, EVEN_C: tl.constexpr):
        # Program (image, row band, column block) of the input's (H, W) x channel block; pad_h, pad_w are the
        # turned conv's (k - 1 - the forward's). Its lanes' dscale and dshift summed to row `pid` of the buffers.
        C, sgn, sgh, sgw = _multiple(C, ALIGN), _multiple(sgn, ALIGN), _multiple(sgh, ALIGN), _multiple(sgw, ALIGN)
        sxn, sxh, sxw = _multiple(sxn, ALIGN), _multiple(sxh, ALIGN), _multiple(sxw, ALIGN)
        n, top, out_rows, left, wi, wi_ok, c, c_ok = _strip(H, W, C, ROWS, BLOCK_W, BLOCK_C)  # dx's (H, W)
        pid = tl.program_id(0)
        if AFFINE:
            scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)
            shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)
        else:
            scale = tl.zeros([BLOCK_C], dtype=tl.float32)
            shift = scale
        if _inside(left, pad_w, WO, W, K, 1, BLOCK_W):
            dscale, dshift = _input_grad_rows(g_ptr, w_ptr, x_ptr, dx_ptr, scale, shift, n, top, out_rows, wi, wi_ok,
                                              c, c_ok, HO, WO, C, pad_h, pad_w, sgn, sgh, sgw, sxn, sxh, sxw, K,
                                              AFFINE, ACT, False, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
        else:
            dscale, dshift = _input_grad_rows(g_ptr, w_ptr, x_ptr, dx_ptr, scale, shift, n, top, out_rows, wi, wi_ok,
                                              c, c_ok, HO, WO, C, pad_h, pad_w, sgn, sgh, sgw, sxn, sxh, sxw, K,
                                              AFFINE, ACT, True, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
        if AFFINE:
            tl.store(dscale_ptr + pid * C + c, tl.sum(dscale, axis=0), mask=c_ok)
            tl.store(dshift_ptr + pid * C + c, tl.sum(dshift, axis=0), mask=c_ok)


def takes(kernel_size: int, stride: int, input_grad: bool = False) -> bool:
    """Whether the sliding kernel runs this pass of the conv: kernels up to 5 x 5, the forward at stride 1 or 2, the
    input gradient (a turned conv) at stride 1."""
    return misfit(kernel_size, stride, None, (1,) if input_grad else (1, 2)) is None


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(2), t.stride(3)


def _launch(height: int, width: int, channels: int, batch: int,
            tiles: tuple[int, ...] | None) -> tuple[tuple[int, int], dict, tuple[int, int]]:
    """(grid, the kernel's tile arguments and launch options, (ROWS, BLOCK_W)) for an output of height x width on
    `tiles` (`depthwise_sliding`'s; None or empty: its defaults)."""
    block_w, block_c, rows, warps, *prefetch = tiles or default_tiles(channels, height, width)
    grid = (batch * cdiv(height, rows) * cdiv(width, block_w), cdiv(channels, block_c))
    options = dict(PREFETCH=bool(prefetch and prefetch[0]), BLOCK_W=block_w, BLOCK_C=block_c, ROWS=rows,
                   EVEN_C=channels % block_c == 0, **({} if INTERPRET else {"num_warps": warps}))
    return grid, options, (rows, block_w)


def forward(a: torch.Tensor, taps: torch.Tensor, kernel_size: int, stride: int, padding: tuple[int, int],
            output_size: tuple[int, int],
            tiles: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): the sliding depthwise conv of a (the activation, channels-last) by the (k * k, C) taps
    (stride 1 or 2) on `tiles` (`depthwise_sliding`'s; None: its defaults), y in a's dtype, and y's float32 batch mean
    and biased variance."""
    from effnet.fast.bn_depthwise import _tile_counts  # the forward's blocks are tiles of ROWS x BLOCK_W

    batch, channels, height, width = a.shape
    out_h, out_w = output_size
    y = channels_last_empty(a, (batch, channels, out_h, out_w))
    grid, options, (rows, block_w) = _launch(out_h, out_w, channels, batch, tiles)
    sums = torch.empty((grid[0], channels), device=a.device, dtype=torch.float32)
    m2 = torch.empty_like(sums)
    _forward_kernel[grid](a, taps, y, sums, m2, height, width, channels, out_h, out_w, padding[0], padding[1],
                          *_strides(a), *_strides(y), K=kernel_size, STRIDE=stride, ALIGN=kernels.map_alignment(a, y),
                          **options)
    counts = bn_stats.block_counts(a.device, _tile_counts, batch, out_h, out_w, rows, block_w)
    return y, *bn_stats.merge_moments(sums, m2, counts)


def input_grad(g: torch.Tensor, taps: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None,
               shift: torch.Tensor | None, kernel_size: int, stride: int, padding: tuple[int, int], act: bool,
               tiles: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, daffine), daffine (2, C) dscale and dshift, empty without scale: the sliding conv of g by the turned
    taps (stride 1) on `tiles` (as `forward`'s), then dx = da * act'(z) * scale with z = x * scale + shift and
    daffine, in the same kernel."""
    batch, channels, height, width = x.shape
    out_h, out_w = g.shape[2:]
    k = kernel_size
    dx = channels_last_empty(x, tuple(x.shape))
    grid, options, _ = _launch(height, width, channels, batch, tiles)
    parts = torch.empty((2, grid[0], channels), device=x.device, dtype=torch.float32)
    affine = scale is not None
    _input_grad_kernel[grid](g, taps, x, scale if affine else parts, shift if affine else parts, dx, parts[0],
                             parts[1], height, width, channels, out_h, out_w, k - 1 - padding[0], k - 1 - padding[1],
                             *_strides(g), *_strides(x), K=k, AFFINE=affine, ACT=kernels.act_mode(act, x),
                             ALIGN=kernels.map_alignment(g, x), **options)
    if not affine:
        return dx, x.new_empty((0,), dtype=torch.float32)
    return dx, parts.sum(1)  # (2, C): dscale and dshift in one reduction
