"""The depthwise inference pass on tensor cores: each kernel row a banded matrix product (experimental).

`kernels.depthwise` computes every output from k² taps on the CUDA cores, each tap a load of a shifted tile,
a conversion and a multiply-add; session 12 counted 150-190 instructions an output in its 5 x 5 SASS, and
run 5 timed B0's 5 x 5 stride-1 layers at 280-350 GB/s, a fifth of what the 3 x 3 layers move. Here each
channel's output row is a sum of k matrix products instead: for kernel row i, the input row it reads times a
banded matrix holding that channel's k weights of row i,

    y[c, r, j] = sum_i sum_w x[c, s r + i - pad, s w0 - pad + w] * T[i, c, w, j],
    T[i, c, w, j] = weight[c, i, w - s j]

(zero where w - s j is outside 0..k-1; s the stride), for a tile of BLOCK_W input columns and BLOCK_W / s output
columns, the first (BLOCK_W - k) / s + 1 of them whole. A program takes BLOCK_R output rows (of one or several
images: a row's input rows are masked to its own image) by those columns by BLOCK_C channels, as a `tl.dot`
batched over its channels: per output, about k BLOCK_W / (whole outputs) values loaded instead of k², the
products on tensor cores, which do the band's zeros at no cost that matters. The tables T (k, C, BLOCK_W,
BLOCK_W / s) are gathered from the taps once per layer and geometry (`band_tables`). The SE sums are added
per (image, channel), one atomic add per tile row.

Float32 maps take exact float32 products (no TF32): that is for the tests under the interpreter, whose
products have no bfloat16; on a GPU the 16-bit maps are the point. Equal to `kernels.depthwise` up to float32
summation order. A sweep variant (`benchmarks/depthwise_sweep.py`, kernel "banded" in a tuning file) until a
GPU run shows it faster: compiled for sm_90 it takes a quarter to a half of the tiled kernel's instructions per
output, but up to twice its registers (`default_tiles`).
"""
from __future__ import annotations

import functools
import weakref

import torch

from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, act_mode, map_alignment, triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _multiple, _silu

    @triton.jit
    def _banded_depthwise_kernel(x_ptr, t_ptr, b_ptr, y_ptr, pool_ptr,
                                 H, W, C, HO, WO, ROWS, pad_h, pad_w,
                                 sxn, sxh, sxw, syn, syh, syw,
                                 K: tl.constexpr, STRIDE: tl.constexpr, BIAS: tl.constexpr, ACT: tl.constexpr,
                                 POOL: tl.constexpr,
                                 BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                                 ALIGN: tl.constexpr, IEEE: tl.constexpr):
        # One program: BLOCK_R output rows (image and row flattened) x the BLOCK_W // STRIDE output columns whose
        # inputs lie in its BLOCK_W input columns (VALID of them whole) x BLOCK_C channels.
        C, sxn, sxh, sxw = _multiple(C, ALIGN), _multiple(sxn, ALIGN), _multiple(sxh, ALIGN), _multiple(sxw, ALIGN)
        syn, syh, syw = _multiple(syn, ALIGN), _multiple(syh, ALIGN), _multiple(syw, ALIGN)
        BLOCK_O: tl.constexpr = BLOCK_W // STRIDE
        VALID: tl.constexpr = (BLOCK_W - K) // STRIDE + 1
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        w0 = tl.program_id(1) * VALID  # the tile's first output column
        c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        n, ho = r // HO, r % HO
        r_ok, c_ok = r < ROWS, c < C
        wi = w0 * STRIDE - pad_w + tl.arange(0, BLOCK_W)  # the tile's input columns
        # (BLOCK_C, BLOCK_R, BLOCK_W) blocks: channels first, the products' batch
        cc, ww = c[:, None, None], wi[None, None, :]
        nn_, hh = n[None, :, None], ho[None, :, None]
        base_ok = c_ok[:, None, None] & r_ok[None, :, None] & (ww >= 0) & (ww < W)
        t_offsets = ((c[:, None, None] * BLOCK_W + tl.arange(0, BLOCK_W)[None, :, None]) * BLOCK_O
                     + tl.arange(0, BLOCK_O)[None, None, :])  # the tables (K, C, BLOCK_W, BLOCK_O)
        acc = tl.zeros([BLOCK_C, BLOCK_R, BLOCK_O], dtype=tl.float32)
        for i in tl.static_range(K):
            hi = hh * STRIDE + (i - pad_h)
            ok = base_ok & (hi >= 0) & (hi < H)
            a = tl.load(x_ptr + nn_ * sxn + hi * sxh + ww * sxw + cc, mask=ok, other=0.0)
            t = tl.load(t_ptr + i * C * BLOCK_W * BLOCK_O + t_offsets, mask=c_ok[:, None, None], other=0.0)
            acc += _dot(a, t, IEEE)
        out = acc
        if BIAS:
            out += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[:, None, None]
        if ACT:
            out = _silu(out, ACT)
        lane = tl.arange(0, BLOCK_O)
        wo = w0 + lane
        out_ok = c_ok[:, None, None] & r_ok[None, :, None] & ((lane < VALID) & (wo < WO))[None, None, :]
        tl.store(y_ptr + nn_ * syn + hh * syh + wo[None, None, :] * syw + cc, out.to(y_ptr.dtype.element_ty),
                 mask=out_ok)
        if POOL:  # one atomic add per row and channel: summing the rows of each image first costs more instructions
            # (compiled for sm_90: 12% more at 28 px, 40% at 7 px) than the adds, which need no answer
            rowsums = tl.sum(tl.where(out_ok, out, 0.0), axis=2)  # (BLOCK_C, BLOCK_R)
            tl.atomic_add(pool_ptr + n[None, :] * C + c[:, None], rowsums, mask=c_ok[:, None] & r_ok[None, :])


def whole_outputs(width_tile: int, kernel_size: int, stride: int) -> int:
    """How many output columns a tile of `width_tile` input columns holds whole (all k of their taps inside)."""
    return (width_tile - kernel_size) // stride + 1


def band_width(width: int, kernel_size: int, stride: int = 1) -> int:
    """The default tile width (input columns per program) for output maps `width` wide: 16 at stride 1 where its
    whole outputs cover the row, else 32 (wider maps take several tiles; 64-column tiles take about 205 registers
    or spill on sm_90). A tile's outputs, width_tile / stride slots, are at least 16 (`tl.dot`'s least)."""
    return 16 if stride == 1 and whole_outputs(16, kernel_size, 1) >= width else 32


def default_tiles(width: int, kernel_size: int, stride: int = 1) -> tuple[int, int, int, int]:
    """(BLOCK_W, BLOCK_R, BLOCK_C, num_warps) for output maps `width` wide. Compiled for sm_90 (Triton 3.6, bf16,
    B0's layers), none spills: 60-64 registers at BLOCK_W 16 (32 warps resident per multiprocessor), about 108
    at 32 (16 warps); about 30-45 instructions a whole output in the SASS, where `kernels.depthwise` takes 55-64
    (3 x 3) and 150-190 (5 x 5)."""
    width_tile = band_width(width, kernel_size, stride)
    if INTERPRET:
        return width_tile, 16, 16, 4
    return width_tile, 32, 8, 8


@functools.lru_cache(maxsize=None)
def band_index(kernel_size: int, rows: int, columns: int, offset: int, row_step: int, column_step: int,
               flip: bool, device: torch.device) -> torch.Tensor:
    """(k, rows, columns) int64: for each kernel row i and table entry (a, b), the tap i k + d of row-major taps,
    d = offset + row_step a + column_step b (with `flip`, the kernel turned half a turn: (k - 1 - i) k + k - 1 - d),
    and k² (a zero appended to the taps) where d is outside 0..k-1. Made once per geometry and device."""
    k = kernel_size
    d = (offset + row_step * torch.arange(rows)[:, None] + column_step * torch.arange(columns)[None, :])[None]
    i = torch.arange(k)[:, None, None]
    tap = (k - 1 - i) * k + k - 1 - d if flip else i * k + d
    return torch.where((d >= 0) & (d < k), tap, k * k).to(device)


def gather_tables(taps: torch.Tensor, index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(k, C, rows, columns) in `dtype`: the taps (k*k, C) at `index` (`band_index`), zero at k²; four launches.
    A band's columns innermost: what the kernels' products take without reordering (compiled for sm_90, channels
    innermost cost the 5 x 5 kernel 18% more instructions; channels outermost, 34 more registers)."""
    return torch.nn.functional.pad(taps.t().to(dtype), (0, 1))[:, index].transpose(0, 1).contiguous()


def band_tables(taps: torch.Tensor, kernel_size: int, stride: int, width_tile: int, dtype: torch.dtype,
                flip: bool = False) -> torch.Tensor:
    """The banded matrices of depthwise taps (k*k, C) (row-major taps, as `kernels.depthwise` takes them):
    (k, C, width_tile, width_tile / stride) in `dtype`, T[i, c, w, j] = taps[i k + w - stride j, c] where
    0 <= w - stride j < k, else zero (with `flip`, of the kernel turned half a turn). Made once per taps tensor,
    geometry and dtype while the taps live, and again when they change in place."""
    key = (id(taps), kernel_size, stride, width_tile, dtype, flip)
    cached = _TABLES.get(key)
    if cached is not None and cached[0]() is taps and cached[1] == taps._version:
        return cached[2]
    index = band_index(kernel_size, width_tile, width_tile // stride, 0, 1, -stride, flip, taps.device)
    tables = gather_tables(taps, index, dtype)
    if not torch.compiler.is_compiling():  # kept while the taps live (the tables go with them)
        _TABLES[key] = (weakref.ref(taps, lambda _, key=key: _TABLES.pop(key, None)), taps._version, tables)
    return tables


# (id of the taps, k, stride, tile width, dtype, flip) -> (a weak reference to the taps, their version, the tables)
_TABLES: dict[tuple, tuple[weakref.ref, int, torch.Tensor]] = {}


def valid_tile(width_tile: int, kernel_size: int, stride: int) -> bool:
    """Whether a banded tile `width_tile` input columns wide works: a power of two whose width_tile / stride
    outputs are at least 16 and hold at least one whole output."""
    return (width_tile & (width_tile - 1) == 0 and width_tile // stride >= 16
            and whole_outputs(width_tile, kernel_size, stride) >= 1)


def banded_depthwise(x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor | None, *, kernel_size: int, stride: int,
                     padding: tuple[int, int], output_size: tuple[int, int], act: bool, pool: bool,
                     tiles: tuple[int, int, int, int] | None = None,
                     flip: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`kernels.depthwise` (its arguments; `taps` (k*k, C)) on tensor cores: the output and, with `pool`, the
    float32 per-image channel sums. No bias where `bias` is None, and with `flip` the taps turned half a turn (the
    training forms, `bn_depthwise_banded`). `tiles` = (BLOCK_W, BLOCK_R, BLOCK_C, num_warps)."""
    batch, channels, height, width = x.shape
    out_h, out_w = output_size
    width_tile, block_r, block_c, warps = tiles or default_tiles(out_w, kernel_size, stride)
    if not valid_tile(width_tile, kernel_size, stride):
        raise ValueError(f"banded depthwise tiles must be a power of two, at least 16 x the stride ({stride}) and "
                         f"as wide as the kernel ({kernel_size}), got {width_tile}")
    tables = band_tables(taps, kernel_size, stride, width_tile, x.dtype, flip)
    y = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    sums = torch.zeros((batch, channels), device=x.device, dtype=torch.float32) if pool else y
    rows = batch * out_h
    grid = (cdiv(rows, block_r), cdiv(out_w, whole_outputs(width_tile, kernel_size, stride)),
            cdiv(channels, block_c))
    _banded_depthwise_kernel[grid](
        x, tables, bias if bias is not None else taps, y, sums, height, width, channels, out_h, out_w, rows,
        padding[0], padding[1], x.stride(0), x.stride(2), x.stride(3), y.stride(0), y.stride(2), y.stride(3),
        K=kernel_size, STRIDE=stride, BIAS=bias is not None, ACT=act_mode(act, y), POOL=pool, BLOCK_R=block_r,
        BLOCK_W=width_tile, BLOCK_C=block_c, ALIGN=map_alignment(x, y), IEEE=x.dtype == torch.float32,
        **({} if INTERPRET else {"num_warps": warps}))
    return y, (sums if pool else None)
