"""The inference depthwise conv as a window that slides down the rows: each input row loaded k times, not k² times.
A tuning-file choice until a GPU run times it.

Run 8 (an H200, benchmarks/RESULTS.md) found the tiled kernel (`kernels.depthwise`) furthest from the memory
floor on the 5 x 5 stride-1 layers: 8.5-9.8x on B0's, where its 3 x 3 layers ran at 3-5x, and no faster than
cuDNN there. Each of a tile's k² taps loads the whole tile shifted, so every input value crosses L1 k² times
(25 for a 5 x 5 kernel), and Nsight Compute put 40% of the kernel's stalls on those loads at a 64% L1 hit rate.

Here a program owns BLOCK_W output columns x BLOCK_C channels of ROWS output rows of one image, and walks its
input rows from the top: it loads each input row's k column-shifted tiles once, adds each, times the tap of row
kh, to the output rows in flight (output row ho takes input row s ho - pad + kh through tap kh at stride s), and
stores the oldest of them, now complete, with the bias, the SiLU and the squeeze-excitation's channel sums as the
tiled kernel applies them. Each step completes one output row and adds the last s input rows of its window (at
stride 2 every other column); the accumulators are loop-carried registers shifted one row a step (a tuple of
five: kernels up to 5 x 5), and the k² taps of the program's channels stay in registers. An input row is loaded
k times instead of k², at the price of (k - 1) // s steps of warm-up per program (the rows above its first
output).

Compiled for sm_90 (Triton 3.6, B0's 240-channel 5 x 5 layer at 28 px, bf16): a loop step takes 207 SASS
instructions for 4 outputs per thread, 104 of them the products, 5 of them loads: about 52 instructions and 1.25
loads an output, where the tiled kernel takes about 120 and 6. With 4 values of a tile per thread a 5 x 5 kernel
takes 168 registers (12 warps per multiprocessor), with 2 values 108 (16 warps); 8 values spill.

Each step's products wait on that step's loads; with a fifth tile value of 1 (PREFETCH) a program loads the next
input row's tiles before the current row's products, so that their latency overlaps them (5 x 5: 183 registers,
10 warps; 112 at 2 values a thread). `benchmarks/depthwise_sweep.py` times it per layer ("sliding" and its tiles)
and records it where it wins (tuning kernel `sliding` for `depthwise`, tiles (BLOCK_W, BLOCK_C, ROWS, num_warps[,
prefetch])). Never a default.
"""
from __future__ import annotations

import torch

from effnet.fast import kernels
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, triton

MAX_KERNEL = 5  # the accumulators and tap rows are tuples of five: k x k kernels up to 5 x 5

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _multiple, _silu

    @triton.jit
    def _tap(w_ptr, kh: tl.constexpr, kw: tl.constexpr, c, c_ok, C, K: tl.constexpr, EVEN_C: tl.constexpr,
             FLIP: tl.constexpr):
        """Tap (kh, kw) of the channels c, float32 (BC,). FLIP takes it from (k - 1 - kh, k - 1 - kw): the kernel
        turned, as a stride-1 conv's input gradient takes it."""
        row = K * K - 1 - (kh * K + kw) if FLIP else kh * K + kw
        if EVEN_C:
            tap = tl.load(w_ptr + row * C + c).to(tl.float32)
        else:
            tap = tl.load(w_ptr + row * C + c, mask=c_ok, other=0.0).to(tl.float32)
        return tap

    @triton.jit
    def _row_taps(w_ptr, kh: tl.constexpr, c, c_ok, C, K: tl.constexpr, EVEN_C: tl.constexpr, FLIP: tl.constexpr):
        """Row kh's taps of the channels c, a tuple of five (those past the kernel's k never read)."""
        t0 = _tap(w_ptr, kh, 0, c, c_ok, C, K, EVEN_C, FLIP)
        t1, t2, t3, t4 = t0, t0, t0, t0
        if K > 1:
            t1 = _tap(w_ptr, kh, 1, c, c_ok, C, K, EVEN_C, FLIP)
        if K > 2:
            t2 = _tap(w_ptr, kh, 2, c, c_ok, C, K, EVEN_C, FLIP)
        if K > 3:
            t3 = _tap(w_ptr, kh, 3, c, c_ok, C, K, EVEN_C, FLIP)
        if K > 4:
            t4 = _tap(w_ptr, kh, 4, c, c_ok, C, K, EVEN_C, FLIP)
        return t0, t1, t2, t3, t4

    @triton.jit
    def _taps(w_ptr, c, c_ok, C, K: tl.constexpr, EVEN_C: tl.constexpr, FLIP: tl.constexpr):
        """The k x k taps of the channels c as five rows of five, taps[kh][kw] (those past k never read), held in
        registers."""
        r0 = _row_taps(w_ptr, 0, c, c_ok, C, K, EVEN_C, FLIP)
        r1, r2, r3, r4 = r0, r0, r0, r0
        if K > 1:
            r1 = _row_taps(w_ptr, 1, c, c_ok, C, K, EVEN_C, FLIP)
        if K > 2:
            r2 = _row_taps(w_ptr, 2, c, c_ok, C, K, EVEN_C, FLIP)
        if K > 3:
            r3 = _row_taps(w_ptr, 3, c, c_ok, C, K, EVEN_C, FLIP)
        if K > 4:
            r4 = _row_taps(w_ptr, 4, c, c_ok, C, K, EVEN_C, FLIP)
        return r0, r1, r2, r3, r4

    @triton.jit
    def _strip(HO, WO, C, ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """Program (image, row band, column block) x channel block of an (HO, WO) output: its image n, first row
        `top`, row count (those < HO), first column `left`, columns wo (BW,) and which lie inside, channels c (BC,)
        and which are real. Channels are unit-stride (channels-last)."""
        pid = tl.program_id(0)
        blocks_w = tl.cdiv(WO, BLOCK_W)
        bands = tl.cdiv(HO, ROWS)
        left = (pid % blocks_w) * BLOCK_W
        top = ((pid // blocks_w) % bands) * ROWS
        wo = left + tl.arange(0, BLOCK_W)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        return pid // (blocks_w * bands), top, tl.minimum(ROWS, HO - top), left, wo, wo < WO, c, c < C

    @triton.jit
    def _store_row(ptr, value, wo_ok, c_ok, MASKED: tl.constexpr, EVEN_C: tl.constexpr):
        """Store a (BW, BC) row tile through its pointers `ptr`: masked to the map's columns and channels with
        MASKED, to its channels without EVEN_C."""
        if MASKED:
            tl.store(ptr, value, mask=wo_ok[:, None] & c_ok[None, :])
        elif EVEN_C:
            tl.store(ptr, value)
        else:
            tl.store(ptr, value, mask=c_ok[None, :])

    @triton.jit
    def _shifted(row_ptr, kw: tl.constexpr, wo, wo_ok, c_ok, W, pad_w, sxw, STRIDE: tl.constexpr,
                 MASKED: tl.constexpr, EVEN_C: tl.constexpr):
        """Tap column kw's (BW, BC) tile of one input row for the output columns wo, as loaded (zero padding
        outside the map)."""
        wi = wo * STRIDE - pad_w + kw
        if MASKED:
            values = tl.load(row_ptr + wi[:, None] * sxw, mask=((wi >= 0) & (wi < W) & wo_ok)[:, None]
                             & c_ok[None, :], other=0.0)
        elif EVEN_C:
            values = tl.load(row_ptr + wi[:, None] * sxw)
        else:
            values = tl.load(row_ptr + wi[:, None] * sxw, mask=c_ok[None, :], other=0.0)
        return values

    @triton.jit
    def _load_row(row_ptr, wo, wo_ok, c_ok, W, pad_w, sxw, K: tl.constexpr, STRIDE: tl.constexpr,
                  MASKED: tl.constexpr, EVEN_C: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """One input row's k column-shifted (BW, BC) tiles as loaded, a tuple of five (zeros past k). `row_ptr`
        (1, BC) points at the row's column 0, channels c. MASKED tests each tap's columns against the map (its
        zero padding) and the output; without it, with EVEN_C, the loads take no mask."""
        zero = tl.zeros([BLOCK_W, BLOCK_C], dtype=row_ptr.dtype.element_ty)
        t1, t2, t3, t4 = zero, zero, zero, zero
        t0 = _shifted(row_ptr, 0, wo, wo_ok, c_ok, W, pad_w, sxw, STRIDE, MASKED, EVEN_C)
        if K > 1:
            t1 = _shifted(row_ptr, 1, wo, wo_ok, c_ok, W, pad_w, sxw, STRIDE, MASKED, EVEN_C)
        if K > 2:
            t2 = _shifted(row_ptr, 2, wo, wo_ok, c_ok, W, pad_w, sxw, STRIDE, MASKED, EVEN_C)
        if K > 3:
            t3 = _shifted(row_ptr, 3, wo, wo_ok, c_ok, W, pad_w, sxw, STRIDE, MASKED, EVEN_C)
        if K > 4:
            t4 = _shifted(row_ptr, 4, wo, wo_ok, c_ok, W, pad_w, sxw, STRIDE, MASKED, EVEN_C)
        return t0, t1, t2, t3, t4

    @triton.jit
    def _add_tiles(acc, tiles, taps, K: tl.constexpr, FIRST: tl.constexpr, STRIDE: tl.constexpr):
        """The accumulators (five (BW, BC) tiles, acc[j] output row ho + j of the step's ho) with one input row's
        shifted tiles added: the row reaches acc[j] through tap row FIRST - STRIDE j, where that is a row."""
        a0, a1, a2, a3, a4 = acc
        for kw in tl.static_range(K):
            x = tiles[kw].to(tl.float32)
            a0 += x * taps[FIRST][kw][None, :]
            if FIRST >= STRIDE:
                a1 += x * taps[FIRST - STRIDE][kw][None, :]
            if FIRST >= 2 * STRIDE:
                a2 += x * taps[FIRST - 2 * STRIDE][kw][None, :]
            if FIRST >= 3 * STRIDE:
                a3 += x * taps[FIRST - 3 * STRIDE][kw][None, :]
            if FIRST >= 4 * STRIDE:
                a4 += x * taps[FIRST - 4 * STRIDE][kw][None, :]
        return a0, a1, a2, a3, a4

    @triton.jit
    def _add_row(acc, ahead, taps, base, hi, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K: tl.constexpr,
                 FIRST: tl.constexpr, STRIDE: tl.constexpr, MASKED: tl.constexpr, EVEN_C: tl.constexpr,
                 PREFETCH: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """(The accumulators with input row hi added, as `_add_tiles` with FIRST adds it, the tiles loaded ahead).
        `base` (1, BC) points at the image's row 0, column 0, channels c. With PREFETCH `ahead` holds this row's
        tiles, loaded a row earlier, and row hi + 1's load before this row's products, so that their latency
        overlaps them (a row past the map clamped into it, loaded and not used); without it `ahead` passes through
        and the row loads here. A row of the zero padding adds nothing."""
        if PREFETCH:
            current = ahead
            ahead = _load_row(base + tl.minimum(tl.maximum(hi + 1, 0), H - 1) * sxh, wo, wo_ok, c_ok, W, pad_w, sxw,
                              K, STRIDE, MASKED, EVEN_C, BLOCK_W, BLOCK_C)
            if (hi >= 0) & (hi < H):
                acc = _add_tiles(acc, current, taps, K, FIRST, STRIDE)
        else:
            if (hi >= 0) & (hi < H):
                acc = _add_tiles(acc, _load_row(base + hi * sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K, STRIDE, MASKED,
                                                EVEN_C, BLOCK_W, BLOCK_C), taps, K, FIRST, STRIDE)
        return acc, ahead

    @triton.jit
    def _first_rows(base, top, pad_h, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K: tl.constexpr, STRIDE: tl.constexpr,
                    MASKED: tl.constexpr, EVEN_C: tl.constexpr, PREFETCH: tl.constexpr, BLOCK_W: tl.constexpr,
                    BLOCK_C: tl.constexpr):
        """`_step`'s `ahead` for a program's first step: with PREFETCH its first input row's tiles (clamped into the
        map), else zeros."""
        if PREFETCH:
            hi = STRIDE * (top - (K - 1) // STRIDE) - pad_h + K - STRIDE
            ahead = _load_row(base + tl.minimum(tl.maximum(hi, 0), H - 1) * sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K,
                              STRIDE, MASKED, EVEN_C, BLOCK_W, BLOCK_C)
        else:
            zero = tl.zeros([BLOCK_W, BLOCK_C], dtype=base.dtype.element_ty)
            ahead = (zero, zero, zero, zero, zero)
        return ahead

    @triton.jit
    def _step(acc, ahead, taps, base, ho, pad_h, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K: tl.constexpr,
              STRIDE: tl.constexpr, MASKED: tl.constexpr, EVEN_C: tl.constexpr, PREFETCH: tl.constexpr,
              BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """The step that completes output row ho (acc[0]): the last STRIDE input rows of its window, STRIDE ho -
        pad_h + k - STRIDE on, added (`_add_row`). A program's walk starts (k - 1) // STRIDE steps above its first
        output row, so that the rows of its first window are all added; those steps' rows are not stored."""
        hi = STRIDE * ho - pad_h + K - STRIDE
        acc, ahead = _add_row(acc, ahead, taps, base, hi, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K, K - STRIDE,
                              STRIDE, MASKED, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
        if STRIDE == 2:
            acc, ahead = _add_row(acc, ahead, taps, base, hi + 1, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K, K - 1,
                                  STRIDE, MASKED, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
        return acc, ahead

    @triton.jit
    def _slide(x_ptr, w_ptr, y_ptr, bias, n, top, out_rows, wo, wo_ok, c, c_ok, H, W, C, pad_h, pad_w,
               sxn, sxh, sxw, syn, syh, syw, K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr,
               MASKED: tl.constexpr, EVEN_C: tl.constexpr, FLIP: tl.constexpr, PREFETCH: tl.constexpr,
               BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """The program's output rows, stored; returns their float32 sums per (column, channel) (BW, BC), those of
        columns past the output zero. MASKED and PREFETCH: `_add_row`'s; MASKED masks the stores too."""
        taps = _taps(w_ptr, c, c_ok, C, K, EVEN_C, FLIP)
        zero = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        acc = (zero, zero, zero, zero, zero)  # acc[j]: output row ho + j of the step completing ho
        pooled = zero
        base = x_ptr + n * sxn + c[None, :]
        ahead = _first_rows(base, top, pad_h, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K, STRIDE, MASKED, EVEN_C,
                            PREFETCH, BLOCK_W, BLOCK_C)
        for s in range(out_rows + (K - 1) // STRIDE):
            ho = top - (K - 1) // STRIDE + s
            acc, ahead = _step(acc, ahead, taps, base, ho, pad_h, H, sxh, wo, wo_ok, c_ok, W, pad_w, sxw, K, STRIDE,
                               MASKED, EVEN_C, PREFETCH, BLOCK_W, BLOCK_C)
            if ho >= top:
                out = acc[0] + bias[None, :]
                if ACT:
                    out = _silu(out, ACT)
                _store_row(y_ptr + n * syn + ho * syh + wo[:, None] * syw + c[None, :], out.to(y_ptr.dtype.element_ty),
                           wo_ok, c_ok, MASKED, EVEN_C)
                pooled += tl.where(wo_ok[:, None], out, 0.0) if MASKED else out
            acc = (acc[1], acc[2], acc[3], acc[4], zero)
        return pooled

    @triton.jit
    def _inside(left, pad_w, W, WO, K: tl.constexpr, STRIDE: tl.constexpr, BLOCK_W: tl.constexpr):
        """Whether the BLOCK_W output columns from `left` all lie inside the output (WO) and every tap of theirs
        reads inside the map (W): their loads and stores need no column masks."""
        return ((left * STRIDE - pad_w >= 0) & ((left + BLOCK_W - 1) * STRIDE - pad_w + K - 1 < W)
                & (left + BLOCK_W <= WO))

    @triton.jit
    def _sliding_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, HO, WO, pad_h, pad_w,
                        sxn, sxh, sxw, syn, syh, syw,
                        K: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, POOL: tl.constexpr,
                        BIAS: tl.constexpr, FLIP: tl.constexpr, PREFETCH: tl.constexpr, BLOCK_W: tl.constexpr,
                        BLOCK_C: tl.constexpr, ROWS: tl.constexpr, ALIGN: tl.constexpr, EVEN_C: tl.constexpr):
        # Program (image, row band, column block) x channel block (`_strip`). The SE's sums stay in registers per
        # (column, channel) until the end: one reduction and one atomic add per program.
        C, sxn, sxh, sxw = _multiple(C, ALIGN), _multiple(sxn, ALIGN), _multiple(sxh, ALIGN), _multiple(sxw, ALIGN)
        syn, syh, syw = _multiple(syn, ALIGN), _multiple(syh, ALIGN), _multiple(syw, ALIGN)
        n, top, out_rows, left, wo, wo_ok, c, c_ok = _strip(HO, WO, C, ROWS, BLOCK_W, BLOCK_C)
        if BIAS:
            bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_C], dtype=tl.float32)
        # Whether every tap's columns lie inside the map and every column inside the output: no column masks.
        if _inside(left, pad_w, W, WO, K, STRIDE, BLOCK_W):
            pooled = _slide(x_ptr, w_ptr, y_ptr, bias, n, top, out_rows, wo, wo_ok, c, c_ok, H, W, C, pad_h, pad_w,
                            sxn, sxh, sxw, syn, syh, syw, K, STRIDE, ACT, False, EVEN_C, FLIP, PREFETCH, BLOCK_W,
                            BLOCK_C)
        else:
            pooled = _slide(x_ptr, w_ptr, y_ptr, bias, n, top, out_rows, wo, wo_ok, c, c_ok, H, W, C, pad_h, pad_w,
                            sxn, sxh, sxw, syn, syh, syw, K, STRIDE, ACT, True, EVEN_C, FLIP, PREFETCH, BLOCK_W,
                            BLOCK_C)
        if POOL:
            tl.atomic_add(pool_ptr + n * C + c, tl.sum(pooled, axis=0), mask=c_ok)


def default_tiles(channels: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(BLOCK_W, BLOCK_C, ROWS, num_warps) for an output of `height` x `width`: its width up to 16 columns, 32
    channels where they divide the layer's (no channel masks) else 16, bands of up to 16 rows, and the warps that
    give each thread 4 values of a tile. A guess from the compiled code (module docstring), until a GPU times it."""
    block_w, block_c = kernels._pow2(width, 8, 16), 32 if channels % 32 == 0 else 16
    return block_w, block_c, min(16, height), max(1, block_w * block_c // 128)


def misfit(kernel_size: int, stride: int, tiles: tuple[int, ...] | None, strides: tuple[int, ...] = (1, 2)
           ) -> str | None:
    """Why this kernel cannot run a k x k conv at `stride` on `tiles` (BLOCK_W, BLOCK_C, ROWS, num_warps[,
    prefetch]; None: the defaults), or None where it can: a stride of `strides` (the training input gradient's
    turned conv: stride 1 only), kernels up to 5 x 5 and as wide as the stride, the blocks and the warps powers of
    two (at most 16 warps), at least one row."""
    if stride not in strides or not stride <= kernel_size <= MAX_KERNEL:
        return (f"the sliding depthwise kernel is for stride {' or '.join(map(str, strides))} and kernels up to "
                f"{MAX_KERNEL}x{MAX_KERNEL} (as wide as the stride), got stride {stride} and a "
                f"{kernel_size}x{kernel_size} kernel")
    if tiles is not None:
        block_w, block_c, rows, warps, *_ = tiles
        if not (all(v > 0 and v & (v - 1) == 0 for v in (block_w, block_c, warps)) and warps <= 16 and rows >= 1):
            return f"the sliding depthwise kernel takes blocks and warps powers of two, got tiles {list(tiles)}"
    return None


def depthwise_sliding(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor | None, *, kernel_size: int,
                      stride: int, padding: tuple[int, int], output_size: tuple[int, int], act: bool, pool: bool,
                      tiles: tuple[int, ...] | None = None,
                      flip: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kernels.depthwise`'s arguments and result (channels-last SiLU(depthwise(x) + bias) and, with `pool`, its
    float32 per-image channel sums (N, C), else None), stride 1 or 2, kernels up to 5 x 5. `tiles` = (BLOCK_W,
    BLOCK_C, ROWS, warps[, prefetch]), default `default_tiles`; a fifth value of 1 loads each input row a step
    ahead of its products (`_add_row`). No bias: none added. With `flip` the kernel turned (tap (kh,
    kw) from (k - 1 - kh, k - 1 - kw)): a stride-1 conv's input gradient (`bn_depthwise_sliding`)."""
    reason = misfit(kernel_size, stride, tiles)
    if reason:
        raise ValueError(reason)
    batch, channels, height, width = x.shape
    out_h, out_w = output_size
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    sums = torch.zeros((batch, channels), device=x.device, dtype=torch.float32) if pool else y
    block_w, block_c, rows, warps, *prefetch = tiles if tiles is not None else default_tiles(channels, out_h, out_w)
    grid = (batch * cdiv(out_h, rows) * cdiv(out_w, block_w), cdiv(channels, block_c))
    _sliding_kernel[grid](x, weight_taps, bias if bias is not None else weight_taps, y, sums, height, width,
                          channels, out_h, out_w, padding[0], padding[1], x.stride(0), x.stride(2), x.stride(3),
                          y.stride(0), y.stride(2), y.stride(3), K=kernel_size, STRIDE=stride,
                          ACT=kernels.act_mode(act, y),
                          POOL=pool, BIAS=bias is not None, FLIP=flip, PREFETCH=bool(prefetch and prefetch[0]),
                          BLOCK_W=block_w, BLOCK_C=block_c, ROWS=rows, ALIGN=kernels.map_alignment(x, y),
                          EVEN_C=channels % block_c == 0,
                          **({} if INTERPRET else {"num_warps": warps}))
    return y, (sums if pool else None)
