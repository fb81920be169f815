"""A 1x1 convolution for training with the batch norms fused at both ends (experimental).

The first piece of a fused *training* MBConv (benchmarks/RESULTS.md, run 5): in a training step
every full-size tensor is written by a convolution, read again for its batch-norm statistics, read
and written by the normalisation + SiLU, and read by the next convolution; the backward does the
same in reverse. Here the convolution takes its input *raw* (the previous convolution's output,
before its batch norm) and applies that norm, the SiLU and the squeeze-excitation gate as it loads
each tile, and it returns its own output raw with the float32 per-channel batch mean and (biased)
variance that the next batch norm needs, gathered in the epilogue:

    a = act(x * scale + shift) * gate[image]        (scale, shift: the previous BN as an affine map)
    y = a @ weight.T                                 (stored in x's dtype; `a` is never written)
    mean[c], var[c] over y[:, c]                     (of the stored, rounded y)

Each program block keeps its rows' sum and sum of squared deviations from its own mean;
`bn_stats.merge_moments` merges the blocks (Chan et al.'s pairwise update), so the variance does not
suffer the cancellation of E[y^2] - E[y]^2. The backward takes dy and the gradients of mean and var
(which autograd brings back from whatever the next layer made of them: `bn_stats.batch_norm_train`), so
the gradient reaching y is dy + dmean / n + dvar * 2 (y - mean) / n, formed as each tile loads. An
expansion's y is the block's widest tensor and its input the narrowest: where all its input channels fit
one K block, both gradients recompute y's tiles as the forward made them (a @ weight.T, on the tiles of
a and the weight they hold, on tensor cores the pass leaves idle) instead of reading y (`_recompute`):
each reads one wide tensor, dy, not two. With `a` recomputed from x as it is loaded, it computes dweight
in one pass split over the rows into a few chunks per tile of dweight (which gives dgate too: per image,
the sum over the output channels of weight * (g.T @ s), with s the activation before the gate) and dx in
another whose epilogue applies the SiLU's and the affine map's derivatives and sums dscale and dshift,
so the wide `da` is never written either. Sums are per program, added up by PyTorch afterwards (exact
order: deterministic, no atomics). The weight gradient's chunks are few (about four programs per
multiprocessor, at least 512 rows each): split per image into about 512 chunks, as run 6 ran it, B0's 7
x 7 layers at batch 128 made 128 partial dweights each, added atomically (451 million adds per training
step, where its 1x1 passes read about 4 billion values). Where nothing is per image (no SE gate), the
row tiles run across images, so small maps fill whole tiles.

Where a tuning file names kernel `blas` for a pass of a layer, that pass runs as the library's matrix products
instead: for a layer that takes its input as it is (an expansion), `effnet.fast.bn_pointwise_blas` (y is linear
in x there, so its statistics and gradients follow from x's moments); for one whose input is normalised (a
projection), `effnet.fast.projection_blas` (the activation and its gradient written out by Triton passes). An
expansion's forward and input gradient on maps of 56 x 56 pixels or more take the first by default, where no
tuning file names their layer (`default_library`: run 9's sweep).

`bn_pointwise` is differentiable in x, weight, scale, shift and gate. It runs the Triton kernels
(PyTorch custom operators, so `torch.compile` traces through them) for channels-last CUDA tensors,
or CPU tensors under TRITON_INTERPRET=1, and the same function in plain PyTorch elsewhere
(`bn_pointwise_reference`). Not yet timed on a GPU: `benchmarks/bn_pointwise_sweep.py` times it
per layer against the PyTorch composite it replaces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.fast import bn_pointwise_blas, bn_stats, kernels, projection_blas, tuning
from effnet.fast.custom_ops import channels_last_empty, pixel_rows
from effnet.fast.grids import cdiv, next_power_of_2
from effnet.fast.kernels import INTERPRET, triton

if triton is not None:
    from effnet.fast.bn_pointwise_kernels import _pw_forward_kernel, _pw_input_grad_kernel, _pw_weight_grad_kernel


# Tiles (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) under the interpreter, whose time goes by the
# number of programs and loop steps: large ones for whole models; the kernel tests take smaller ones, so
# that their small shapes still span several programs and K steps.
_INTERPRET_TILES = (64, 64, 64, 4, 1)


def _span(channels: int, cap: int) -> int:
    """The least power of two that holds `channels` (at least 16, `tl.dot`'s least), at most `cap`."""
    return max(16, min(next_power_of_2(channels), cap))


OPS = ("bn_pointwise", "bn_pointwise_input_grad", "bn_pointwise_weight_grad")


def default_tiles(op: str, in_channels: int, out_channels: int, pixels: int) -> tuple[int, int, int, int, int]:
    """The tiles (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) a layer takes for the pass `op` (one of
    `OPS`) when the tuning file names none: chosen by the traffic they cause, so that the wide tensors are
    read once and the narrow ones a few times, except where run 9's sweep (an H200, B0's 18 layers) found a
    small four-warp tile faster on every layer of a kind (below).

    The forward ("bn_pointwise") makes a (rows, BLOCK_N) tile of y, looping over the input channels, so x is
    read once per block of BLOCK_N outputs: a projection takes its narrow output in one block (up to 256
    channels) and reads its wide input once; an expansion reads its narrow input once per 128 outputs. The
    input gradient ("bn_pointwise_input_grad") is the same product the other way round, a (rows, BLOCK_K)
    tile of dx looping over the outputs, so the gradient g is read once per block of BLOCK_K inputs: an
    expansion takes its narrow input in one block (up to 128) and reads its wide g once; a projection reads
    its narrow g once per 256 inputs (session 10's 32 read it 36 times for a 1152-channel input). The weight
    gradient ("bn_pointwise_weight_grad") makes a (BLOCK_N, BLOCK_K) tile of dweight, looping over the rows,
    so each row's g (dy and y: two reads) is read once per input block and its x once per output block: per
    row about N K (2 / BLOCK_K + 1 / BLOCK_N) values against the 2 N + K of one read, least for an accumulator
    of BLOCK_N x BLOCK_K floats when the tile is square: 128 x 128 (a projection's only 64 inputs wide: with
    the gate's gradient, a second accumulator of the tile's size, a 128-wide one spills on sm_90 under Triton
    3.6). Session 10's
    256 x 32 for a 1152-to-320 projection read twice as much. A tile 256 channels wide takes 32 rows:
    with 64, the forward takes all 255 registers. Every pass pipelines its loop in three stages: with two
    (sessions 10 and 11's gradients), Triton awaits all of a step's copies at its top and issues the next
    step's after its products, so no load is in flight while the program computes, and the gradients' 200-odd
    registers leave one program per multiprocessor to hide that (`compile_check.py`: "copies wait").

    Run 9 timed these and the sweep's tile sets on B0's layers (`benchmarks/bn_pointwise_sweep.py`,
    results/2026-11-28_h200_run9_bn_pointwise_sweep.json). Two kinds of layer take its first set instead:
    - a projection's input gradient with 64 inputs or more, 64 x 64 x 64 on four warps: faster on all ten such
      layers, 1.2-2.4x (144 -> 24 at 56 px 370 against 893 us). The wide-K tile holds 164-180 registers, so
      one program of eight warps per multiprocessor, and the kernel waits on its loads; the small tile
      re-reads g per 64 inputs from L2. (32 -> 16 at 112 px keeps the wide tile: 407 against 465.)
    - the weight gradient on maps of 28 x 28 or less, 32 x 64 x 64 on four warps: as fast or faster on all
      thirteen such layers, up to 1.6x (112 -> 672 at 14 px 48 against 78 us); on the wider maps it lost (16 ->
      96 at 112 px 295 against 180).
    The forwards' winners differ from layer to layer, and an expansion's input gradient took the second set on
    the wide maps, the first on the 14 px ones: those keep the rule above. A tuning file overrides all of it."""
    if op not in OPS:
        raise ValueError(f"unknown bn_pointwise pass {op!r} (known: {', '.join(OPS)})")
    expansion = out_channels >= in_channels  # (or a square layer)
    if op == "bn_pointwise":
        if expansion:
            return (128 if pixels >= 128 else 64), 128, 32, 8, 3
        block_n = _span(out_channels, 256)
        return (32 if block_n > 128 else 64), block_n, 32, 8, 3
    if op == "bn_pointwise_input_grad":
        if expansion:
            return 64, 64, _span(in_channels, 128), 8, 3
        if in_channels >= 64:  # run 9 (docstring)
            return 64, 64, 64, 4, 3
        block_k = _span(in_channels, 256)
        return (32 if block_k > 128 else 64), 32, block_k, 8, 3
    if pixels <= 28 * 28:  # run 9 (docstring)
        return 32, 64, 64, 4, 3
    return 32, _span(out_channels, 128), _span(in_channels, 128 if expansion else 64), 8, 3


BLAS = "blas"  # `_tiles`' answer where the tuning file or `default_library` puts a pass on the library form
LIBRARY_PIXELS = 56 * 56  # an expansion's map from which its forward and input gradient default to the library form


def default_library(op: str, pixels: int) -> bool:
    """Whether an expansion's pass `op` (of `OPS`) on maps of `pixels` pixels takes the library form
    (`bn_pointwise_blas`) where no tuning file names one: the forward and the input gradient on maps of 56 x 56
    or more. Run 9's sweep (an H200, B0 at batch 128; us, the library form against the default tiles): 16 -> 96
    at 112 px 238 against 579 forward and 190 against 465 input gradient, 24 -> 144 at 56 px 170 against 310 and
    124 against 205 (the best tiles 168 and 107); at 28 px it tied or lost (40 -> 240: 103 against 104, 135
    against 66), on smaller maps it lost, and every weight gradient lost (16 -> 96: 216 against 180)."""
    return op in ("bn_pointwise", "bn_pointwise_input_grad") and pixels >= LIBRARY_PIXELS


def library(scale: torch.Tensor | None, gate: torch.Tensor | None, act: bool) -> bool:
    """Whether a layer's passes can run through the library's products: its input taken as it is (an expansion,
    `bn_pointwise_blas`) or normalised (a projection, `projection_blas`); not an input activated or gated
    without a batch norm before it."""
    return bn_pointwise_blas.applies(scale, gate, act) or projection_blas.applies(scale)


def _tiles(op: str, x: torch.Tensor, out_channels: int, scale: torch.Tensor | None, gate: torch.Tensor | None,
           act: bool) -> tuple[int, int, int, int, int] | str:
    """The tuning file's choice for this layer shape and pass (`op`, one of `OPS`): its tiles, or `BLAS` where it
    names the library form and a form takes the layer (`library`); else `BLAS` for an expansion's pass that
    `default_library` names, or `default_tiles` (the interpreter's own tiles under TRITON_INTERPRET, never the
    library form: the kernel tests choose it where they test it)."""
    _, channels, height, width = x.shape
    choice = tuning.lookup(op, in_channels=channels, out_channels=out_channels, height=height, width=width,
                           normalized=scale is not None)
    if choice is not None and choice["kernel"] == "tiled":
        return tuple(choice["tiles"])
    if choice is not None and choice["kernel"] == "blas" and library(scale, gate, act):
        return BLAS
    if INTERPRET:
        return _INTERPRET_TILES
    if choice is None and default_library(op, height * width) and bn_pointwise_blas.applies(scale, gate, act):
        return BLAS
    return default_tiles(op, channels, out_channels, height * width)


def _launch_options(warps: int, stages: int) -> dict:
    return {} if INTERPRET else {"num_warps": warps, "num_stages": stages}


def _flags(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, gate: torch.Tensor | None,
           act: bool) -> dict:
    """The kernels' constexpr flags. ALIGN divides the channel counts and every row stride: x's and dx's (a
    pixel of channels-last x: its channels), y's and dy's (the weight's rows) and the weight's
    (`kernels._multiple`)."""
    return dict(AFFINE=scale is not None, ACT=kernels.act_mode(act, x), GATE=gate is not None,
                IEEE=x.dtype == torch.float32,
                ALIGN=kernels.alignment(x.stride(3), weight.shape[0], weight.stride(0)))


def _recompute(x: torch.Tensor, weight: torch.Tensor, block_k: int) -> bool:
    """Whether the gradients take y's tiles as the forward's product again instead of loading y: for an
    expansion (y the wide side, x the narrow one) whose input channels fit one K block, where the product
    costs a tensor-core pass over tiles already loaded and saves reading the widest tensor of each pass."""
    return x.shape[1] <= block_k and weight.shape[0] > x.shape[1]


def _images(batch: int, pixels: int, per_image: bool) -> tuple[int, int]:
    """(images, pixels per image) as the kernels' row blocks see the batch: its images when something is
    per image (the SE gate, its pool's gradient), else ONE image of all the rows, so that a block may
    span two images and a small map's rows fill whole tiles (49 rows of a 7 x 7 map leave 15 of a 64-row
    tile empty)."""
    return (batch, pixels) if per_image else (1, batch * pixels)


def _forward(x, weight, scale, shift, gate, act, tiles=None):
    """The forward pass; `tiles` = (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) overrides the
    tile choice (for the sweep), as `BLAS` does with the library form (each pass takes `BLAS` so)."""
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    tiles = tiles or _tiles("bn_pointwise", x, out_channels, scale, gate, act)
    if tiles == BLAS:
        if projection_blas.applies(scale):
            return projection_blas.forward(x, weight, scale, shift, gate, act)
        return bn_pointwise_blas.forward(x, weight)
    rows = batch * height * width
    images, pixels = _images(batch, height * width, gate is not None)
    block_m, block_n, block_k, warps, stages = tiles
    y = channels_last_empty(x, (batch, out_channels, height, width))
    blocks_m = images * cdiv(pixels, block_m)
    sums = torch.empty((blocks_m, out_channels), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(sums)
    a, o = pixel_rows(x), y.permute(0, 2, 3, 1).view(rows, out_channels)
    unused = sums  # the pointer passed where a flag leaves an operand out
    grid = (blocks_m * cdiv(out_channels, block_n),)
    _pw_forward_kernel[grid](a, weight, scale if scale is not None else unused, shift if shift is not None else unused,
                          gate if gate is not None else unused, o, sums, m2,
                          rows, out_channels, channels, pixels, a.stride(0), a.stride(1),
                          weight.stride(0), weight.stride(1), o.stride(0), o.stride(1),
                          **_flags(x, weight, scale, gate, act), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                          **_launch_options(warps, stages))
    # Merge the blocks' (count, sum, M2): each image has the same blocks, all full but its last.
    counts = bn_stats.block_counts(x.device, _row_block_counts, images, pixels, block_m)
    return (y, *bn_stats.merge_moments(sums, m2, counts))


def _row_block_counts(batch: int, pixels: int, block_m: int) -> torch.Tensor:
    """Rows in each of the forward's row blocks, image by image: all full but each image's last."""
    blocks = cdiv(pixels, block_m)
    return torch.tensor(([block_m] * (blocks - 1) + [pixels - block_m * (blocks - 1)]) * batch)


def _backward_setup(dy, x, y, tiles):
    """The backward's (M, channels) views of dy, y and x, the pass's `tiles` and its launch options (less
    flags)."""
    block_m, block_n, block_k, warps, stages = tiles
    g, yv, a = pixel_rows(dy), pixel_rows(y), pixel_rows(x)
    if g.stride() != yv.stride():  # autograd may hand over any layout
        g = pixel_rows(dy.contiguous(memory_format=torch.channels_last))
    return g, yv, a, (block_m, block_n, block_k), _launch_options(warps, stages)


# The weight gradient's split over the rows: about this many programs per multiprocessor on a GPU, and at
# least this many rows per chunk, so that the (chunks, N, K) float32 partial sums stay a fraction of the
# rows read (a 128 x 128 tile over 512 rows reads 384 kB of g and x and writes 64 kB, which the sum that
# follows reads back, likely from L2).
_WAVES = 4
_MIN_ROWS = 512


def weight_grad_split(batch: int, pixels: int, block_m: int, chunks: int,
                      gated: bool) -> tuple[int, int, int, int, int]:
    """How `_pw_weight_grad_kernel` splits the rows into about `chunks` chunks: (images, pixels,
    rows_per_program, images_per_program, chunks). Without a gate the batch is one image of all its rows,
    cut anywhere on a row tile. With one, a chunk takes whole images or a piece of one (the gate and its
    gradient are per image): with fewer chunks than images, `images_per_program` whole images each; else
    each image cut into the same number of pieces of whole row tiles, its last one short."""
    if not gated:
        batch, pixels = 1, batch * pixels
    chunks = max(1, chunks)
    if chunks < batch:
        per_program = cdiv(batch, chunks)
        return batch, pixels, pixels, per_program, cdiv(batch, per_program)
    pieces = min(cdiv(chunks, batch), cdiv(pixels, block_m))
    rows = cdiv(cdiv(pixels, pieces), block_m) * block_m
    return batch, pixels, rows, 1, batch * cdiv(pixels, rows)


def _chunks_wanted(x: torch.Tensor, tiles: int, rows: int, waves: int = _WAVES) -> int:
    """How many chunks the weight gradient's rows are split into: enough for `waves` programs per
    multiprocessor over its `tiles` tiles of dweight, none under `_MIN_ROWS` rows. Under the interpreter
    4 (or `waves` where it is not the default), so that the tests' small shapes split."""
    if INTERPRET:
        return 4 if waves == _WAVES else waves
    programs = waves * torch.cuda.get_device_properties(x.device).multi_processor_count
    return max(1, min(cdiv(programs, tiles), rows // _MIN_ROWS))


def _products(dy, stats, y, weight, x, products):
    """The library form's shared products of a normalised layer's backward: `products`, or new ones."""
    return products if products is not None else projection_blas.Products(dy, stats, y, weight, x)


def _weight_grad(dy, stats, x, y, weight, scale, shift, gate, act, tiles=None, load_y=False, products=None):
    """(dweight (out, in) float32, dgate (N, in) float32 or empty without a gate): one pass split over the
    rows (`weight_grad_split`), its chunks' partial sums added by PyTorch. `stats` as in `_backward`;
    `tiles` as `_forward`'s, for this pass, with an optional sixth value: the programs per multiprocessor the
    split aims for (`_WAVES` unless given; fewer write fewer partial sums, `benchmarks/partial_sums.py`);
    `load_y` loads y where `_recompute` would recompute it (for the sweep); `products` the backward's
    `projection_blas.Products` where the library form takes a normalised layer (made here if not given)."""
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    tiles = tiles or _tiles("bn_pointwise_weight_grad", x, out_channels, scale, gate, act)
    if tiles == BLAS:
        if projection_blas.applies(scale):
            return projection_blas.weight_grad(x, scale, shift, gate, act,
                                               _products(dy, stats, y, weight, x, products))
        return bn_pointwise_blas.weight_grad(dy, stats, x, weight), stats.new_empty((0,))
    waves = tiles[5] if len(tiles) > 5 else _WAVES
    g, yv, a, (block_m, block_n, block_k), options = _backward_setup(dy, x, y, tiles[:5])
    blocks_n = cdiv(out_channels, block_n)
    tile_count = blocks_n * cdiv(channels, block_k)
    images, pixels, rows_per_program, images_per_program, chunks = weight_grad_split(
        batch, height * width, block_m, _chunks_wanted(x, tile_count, batch * height * width, waves),
        gate is not None)
    parts = torch.empty((chunks, out_channels, channels), device=x.device, dtype=torch.float32)
    pieces = cdiv(pixels, rows_per_program)
    dgate = torch.empty((blocks_n, images * pieces, channels) if gate is not None else (0,), device=x.device,
                        dtype=torch.float32)
    _pw_weight_grad_kernel[(tile_count, chunks)](
        g, yv, stats, a, scale if scale is not None else stats, shift if shift is not None else stats,
        gate if gate is not None else stats, weight, parts, dgate, out_channels, channels, images, pixels,
        rows_per_program, images_per_program, g.stride(0), g.stride(1), a.stride(0), a.stride(1),
        weight.stride(0), weight.stride(1), **_flags(x, weight, scale, gate, act),
        RECOMPUTE=_recompute(x, weight, block_k) and not load_y, ONE_IMAGE=gate is not None and images_per_program == 1,
        BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_M=block_m, **options)
    if gate is not None:
        dgate = dgate.view(blocks_n, batch, pieces, channels).sum((0, 2))
    return parts.sum(0), dgate


def _input_grad(dy, stats, x, y, weight, scale, shift, gate, act, pool=None, tiles=None, load_y=False,
                products=None):
    """(dx, daffine (2, C) float32: dscale and dshift, empty without scale). `pool` (N, in) float32, if given, is
    added to the gradient of the (gated) activation's input s at every pixel of its image: the gradient an average
    pool of s passes on (`se_projection`). `stats` as in `_backward`; `tiles` as `_forward`'s, for this pass;
    `load_y` and `products` as in `_weight_grad`."""
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    tiles = tiles or _tiles("bn_pointwise_input_grad", x, out_channels, scale, gate, act)
    if tiles == BLAS:
        if projection_blas.applies(scale):
            return projection_blas.input_grad(x, scale, shift, gate, act,
                                              _products(dy, stats, y, weight, x, products), pool)
        return bn_pointwise_blas.input_grad(dy, stats, x, weight), stats.new_empty((0,))
    images, pixels = _images(batch, height * width, gate is not None or pool is not None)
    g, yv, a, (block_m, block_n, block_k), options = _backward_setup(dy, x, y, tiles)
    blocks_m = images * cdiv(pixels, block_m)
    dx = channels_last_empty(x, tuple(x.shape))
    parts = torch.empty((2, blocks_m, channels), device=x.device, dtype=torch.float32)
    dxv = pixel_rows(dx)

    def or_stats(t):  # the pointer passed where a flag leaves an operand out
        return t if t is not None else stats

    _pw_input_grad_kernel[(blocks_m * cdiv(channels, block_k),)](
        g, yv, stats, weight, a, or_stats(scale), or_stats(shift), or_stats(gate), or_stats(pool),
        dxv, parts[0], parts[1], images * pixels, out_channels, channels, pixels, g.stride(0), g.stride(1),
        weight.stride(0), weight.stride(1), a.stride(0), a.stride(1), **_flags(x, weight, scale, gate, act),
        POOL=pool is not None, RECOMPUTE=_recompute(x, weight, block_k) and not load_y, BLOCK_M=block_m,
        BLOCK_K=block_k, BLOCK_N=block_n, **options)
    if scale is None:
        return dx, stats.new_empty((0,))
    return dx, parts.sum(1)  # (2, C): dscale and dshift in one reduction


def _backward(dy, stats, x, y, weight, scale, shift, gate, act, need_dx, need_dw, tiles=None, weight_tiles=None):
    """(dx, dweight, daffine, dgate), each empty where not asked for or not an input (daffine (2, in): dscale
    and dshift). `stats`
    (3, out) float32 holds dmean / n, 2 dvar / n and mean (the gradients of y's batch mean and
    variance, n values per channel); `tiles` and `weight_tiles` = (BLOCK_M, BLOCK_N, BLOCK_K, num_warps,
    num_stages) override the input and weight gradients' tiles, as in `_forward` (BLOCK_N tiles the output
    channels, BLOCK_K the input channels). `need_dx` asks for dx, daffine and dgate (dgate comes with the
    weight gradient's pass)."""
    dx, dw, daffine, dgate = (x.new_empty((0,), dtype=torch.float32) for _ in range(4))
    products = projection_blas.Products(dy, stats, y, weight, x)  # made only if a pass takes the library form
    if need_dw or (need_dx and gate is not None):
        dw, dgate = _weight_grad(dy, stats, x, y, weight, scale, shift, gate, act, weight_tiles, products=products)
        if not need_dx:
            dgate = dgate.new_empty((0,))
    if need_dx:
        dx, daffine = _input_grad(dy, stats, x, y, weight, scale, shift, gate, act, tiles=tiles, products=products)
    return dx, dw if need_dw else dw.new_empty((0,)), daffine, dgate


# As PyTorch custom operators, so `torch.compile` traces a model through them (one opaque node each)
# and autograd takes the forward's gradient from the backward operator.

def casts(weight: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether the kernels need a copy of `weight` (not already in x's dtype and contiguous)."""
    return weight.dtype != x.dtype or not weight.is_contiguous()


def cast_output(weight: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weight the kernels take, what an operator returns of it): the copy in x's dtype, or where none is
    needed the weight itself and an empty tensor (an operator may not return one of its inputs)."""
    if not casts(weight, x):
        return weight, weight.new_empty((0,))
    kernel_weight = weight.to(x.dtype).contiguous()
    return kernel_weight, kernel_weight


# The operators take the parameter as it is (float32 under autocast) and return the copy the kernels use: a
# step then casts each weight once, and its gradient reaches the parameter in float32, without the cast and
# the cast back that autocast's copy of the weight would cost in the backward.
@torch.library.custom_op("effnet::bn_pointwise", mutates_args=())
def _forward_op(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
                gate: torch.Tensor | None, act: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    kernel_weight, returned = cast_output(weight, x)
    return (*_forward(x, kernel_weight, scale, shift, gate, act), returned)


@_forward_op.register_fake
def _(x, weight, scale, shift, gate, act):
    mean = x.new_empty((weight.shape[0],), dtype=torch.float32)
    return (channels_last_empty(x, (x.shape[0], weight.shape[0], *x.shape[2:])), mean, torch.empty_like(mean),
            x.new_empty(tuple(weight.shape) if casts(weight, x) else (0,)))


@torch.library.custom_op("effnet::bn_pointwise_backward", mutates_args=())
def _backward_op(dy: torch.Tensor, stats: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 weight: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
                 gate: torch.Tensor | None, act: bool, need_dx: bool, need_dw: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(dy, stats, x, y, weight, scale, shift, gate, act, need_dx, need_dw)


@_backward_op.register_fake
def _(dy, stats, x, y, weight, scale, shift, gate, act, need_dx, need_dw):
    batch, channels = x.shape[:2]

    def empty(shape: tuple, present: bool) -> torch.Tensor:
        return x.new_empty(shape if present else (0,), dtype=torch.float32)

    return (channels_last_empty(x, tuple(x.shape)) if need_dx else empty((0,), False),
            empty(tuple(weight.shape), need_dw), empty((2, channels), need_dx and scale is not None),
            empty((batch, channels), need_dx and gate is not None))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, scale, shift, gate, act = inputs
    y, mean, _, cast = output
    ctx.save_for_backward(x, y, mean, cast if casts(weight, x) else weight, scale, shift, gate)
    ctx.act = act
    ctx.weight_dtype = weight.dtype
    ctx.set_materialize_grads(False)  # an output without a gradient stays None, not zeros made for it


def _autograd_backward(ctx, dy, dmean, dvar, _):
    x, y, mean, weight, scale, shift, gate = ctx.saved_tensors
    needs = ctx.needs_input_grad
    stats = bn_stats.gradient_stats(dmean, dvar, mean, y)
    dy = torch.zeros_like(y) if dy is None else dy.to(y.dtype)
    need_dx = needs[0] or any(needs[2:5])
    dx, dw, daffine, dgate = _backward_op(dy, stats, x, y, weight, scale, shift, gate, ctx.act, need_dx, needs[1])
    return (dx if needs[0] else None, dw.to(ctx.weight_dtype) if needs[1] else None,
            daffine[0] if needs[2] else None, daffine[1] if needs[3] else None, dgate if needs[4] else None, None)


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def bn_pointwise_reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
                           shift: torch.Tensor | None = None, gate: torch.Tensor | None = None,
                           act: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`bn_pointwise` in plain PyTorch (and what it falls back to): the normalised input rounded to
    x's dtype, an `F.conv2d`, and the float32 mean and biased variance of the rounded output."""
    a = x.float()
    if scale is not None:
        a = a * scale[None, :, None, None] + shift[None, :, None, None]
    if act:
        a = F.silu(a)
    if gate is not None:
        a = a * gate[:, :, None, None]
    y = F.conv2d(a.to(x.dtype), weight.to(x.dtype)[:, :, None, None])
    var, mean = torch.var_mean(y.float(), dim=(0, 2, 3), correction=0)
    return y, mean, var


def usable(x: torch.Tensor) -> bool:
    """Whether `bn_pointwise` takes the Triton kernels for `x` (channels-last, float32 or half, on a GPU
    or under the interpreter). They are deterministic: every partial sum is added up by PyTorch."""
    return (kernels.usable(x) and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and x.is_contiguous(memory_format=torch.channels_last))


def bn_pointwise(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
                 shift: torch.Tensor | None = None, gate: torch.Tensor | None = None,
                 act: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, var): the 1x1 conv of act(x * scale + shift) * gate by `weight` (out, in), with the
    float32 per-channel batch mean and biased variance of y. `x` is channels-last (N, in, H, W); `scale` and
    `shift` (in,) float32 are the previous batch norm as an affine map (both or neither); `gate`
    (N, in) float32 scales each image's channels after the activation. Differentiable in all tensors."""
    if (scale is None) != (shift is None):
        raise ValueError("bn_pointwise takes scale and shift together (the batch norm's affine map) or neither")
    if weight.dim() == 4:
        weight = weight.flatten(1)
    if not usable(x):
        return bn_pointwise_reference(x, weight, scale, shift, gate, act)
    y, mean, var, _ = _forward_op(x, weight, scale, shift, gate, act)
    return y, mean, var
