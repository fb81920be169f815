"""The squeeze-excitation gate of the fused inference block in one Triton launch.

From the float32 channel sums of the depthwise activation (N, C) (`kernels.depthwise` gathers them in
its epilogue), the gate is

    gate = sigmoid(expand(silu(reduce(sums / pixels))))          (N, C) float32

two tiny matrix products with a SiLU between. In PyTorch that is four launches (`ops.excitation`: two
`addmm`s, the SiLU, the sigmoid) of a few microseconds each on a GPU: 64 in a B0 forward, 128 in a B4 one
(run 6's profile: about 0.2 ms of B0's 7.1 ms). Here one program takes BLOCK_N images: the hidden layer
(BLOCK_N, R) stays in registers between the two products. Float32 throughout; the products take TF32 where
PyTorch's own float32 products would (`torch.backends.cuda.matmul.allow_tf32`), so it is the PyTorch path's
function under the same settings, and for the SE of 16-bit activations (`tf32=True`), whose gate scales values
rounded far more coarsely (bf16 keeps 8 bits, TF32 products 11). Else the products are IEEE float32 on the
multiprocessors' FMA units, one program per 16 images: counted at about 150 GFLOP/s a program, B4's SEs would
take about 1 ms per forward of batch 128 that way (its widest, 2688 x 112, tens of microseconds each), where
TF32 takes the tensor cores.

One program takes 16 images (`tl.dot`'s least) and walks all C channels twice, so a batch of 256 runs 16
programs and one of 128 runs 8, on a GPU of 132 multiprocessors: run 8 (an H200) timed B0's 16 SEs at 14 us
each and B4's 32 at 34 us (B4's widest, 2688 channels, 168 steps of one program), 4% of either forward. The split
form (`excitation_split`) spreads the channels over programs in two launches: the first sums the reduce
product's partial hidden layers over chunks of channels, one program per (16 images, chunk); the second adds a
block's partials in order (deterministic), applies the bias and SiLU and takes the expand product for its own
chunk of channels. Run 9 (an H200) timed it faster on every SE of 336 channels or more, at B0's batch of 256
and B4's of 128 (1.04-4.5x; 128 channels a chunk on all but B4's widest), and slower or level below 240: so on a
GPU an SE of 320 channels or more at a batch of 128 or more takes it by default, in chunks of 128 (smaller
batches, whose single kernel runs one program of 16 images, were not timed). A tuning file picks either per
(batch, channels, hidden) shape (op `excitation`, kernel `single` or `split`, tiles (CHUNK,));
`benchmarks/excitation_sweep.py` times both against the default.
"""
from __future__ import annotations

import torch

from effnet.fast import tuning
from effnet.fast.grids import cdiv
from effnet.fast.kernels import INTERPRET, _pow2, triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _excitation_kernel(sums_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, gate_ptr, N, C, R, inv_pixels,
                           PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                           BLOCK_R: tl.constexpr):
        # One program: BLOCK_N images. w1 is the reduce conv's (R, C) weight, w2 the expand conv's (C, R).
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        rows_ok = rows < N
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R
        hidden = tl.zeros([BLOCK_N, BLOCK_R], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = c < C
            sums = tl.load(sums_ptr + rows[:, None] * C + c[None, :], mask=rows_ok[:, None] & c_ok[None, :],
                           other=0.0)  # (BN, BC)
            w1 = tl.load(w1_ptr + r[None, :] * C + c[:, None], mask=c_ok[:, None] & r_ok[None, :],
                         other=0.0)  # (BC, BR): reduce's weight, transposed
            hidden += tl.dot(sums, w1, input_precision=PRECISION)
        hidden = hidden * inv_pixels + tl.load(b1_ptr + r, mask=r_ok, other=0.0)[None, :]
        hidden = hidden * tl.sigmoid(hidden)  # padded columns: silu(0) = 0, and w2 is 0 there
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = c < C
            w2 = tl.load(w2_ptr + c[None, :] * R + r[:, None], mask=r_ok[:, None] & c_ok[None, :],
                         other=0.0)  # (BR, BC): expand's weight, transposed
            logits = tl.dot(hidden, w2, input_precision=PRECISION) + tl.load(b2_ptr + c, mask=c_ok,
                                                                             other=0.0)[None, :]
            tl.store(gate_ptr + rows[:, None] * C + c[None, :], tl.sigmoid(logits),
                     mask=rows_ok[:, None] & c_ok[None, :])


    @triton.jit
    def _excitation_partial_kernel(sums_ptr, w1_ptr, partial_ptr, N, C, R, CHUNK, PRECISION: tl.constexpr,
                                   BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        # One program: BLOCK_N images x channels [chunk * CHUNK, (chunk + 1) * CHUNK) of the reduce product; its
        # partial hidden layer (BN, R) goes to partial[chunk] (chunks, N, R).
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows_ok = rows < N
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R
        start = tl.program_id(1) * CHUNK
        hidden = tl.zeros([BLOCK_N, BLOCK_R], dtype=tl.float32)
        for c0 in range(start, tl.minimum(start + CHUNK, C), BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = (c < C) & (c < start + CHUNK)
            sums = tl.load(sums_ptr + rows[:, None] * C + c[None, :], mask=rows_ok[:, None] & c_ok[None, :],
                           other=0.0)
            w1 = tl.load(w1_ptr + r[None, :] * C + c[:, None], mask=c_ok[:, None] & r_ok[None, :], other=0.0)
            hidden += tl.dot(sums, w1, input_precision=PRECISION)
        tl.store(partial_ptr + (tl.program_id(1) * N + rows[:, None]) * R + r[None, :], hidden,
                 mask=rows_ok[:, None] & r_ok[None, :])

    @triton.jit
    def _excitation_gate_kernel(partial_ptr, b1_ptr, w2_ptr, b2_ptr, gate_ptr, N, C, R, CHUNK, CHUNKS, inv_pixels,
                                PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                                BLOCK_R: tl.constexpr):
        # One program: BLOCK_N images x channels [j * CHUNK, (j + 1) * CHUNK) of the gate: the hidden layer from
        # the CHUNKS partials (summed in order), then the expand product for those channels.
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows_ok = rows < N
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R
        hidden = tl.zeros([BLOCK_N, BLOCK_R], dtype=tl.float32)
        for chunk in range(0, CHUNKS):
            hidden += tl.load(partial_ptr + (chunk * N + rows[:, None]) * R + r[None, :],
                              mask=rows_ok[:, None] & r_ok[None, :], other=0.0)
        hidden = hidden * inv_pixels + tl.load(b1_ptr + r, mask=r_ok, other=0.0)[None, :]
        hidden = hidden * tl.sigmoid(hidden)  # padded columns: silu(0) = 0, and w2 is 0 there
        start = tl.program_id(1) * CHUNK
        for c0 in range(start, tl.minimum(start + CHUNK, C), BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = (c < C) & (c < start + CHUNK)
            w2 = tl.load(w2_ptr + c[None, :] * R + r[:, None], mask=r_ok[:, None] & c_ok[None, :], other=0.0)
            logits = tl.dot(hidden, w2, input_precision=PRECISION) + tl.load(b2_ptr + c, mask=c_ok,
                                                                             other=0.0)[None, :]
            tl.store(gate_ptr + rows[:, None] * C + c[None, :], tl.sigmoid(logits),
                     mask=rows_ok[:, None] & c_ok[None, :])

    @triton.jit
    def _excitation_backward_rows_kernel(pooled_ptr, dgate_ptr, gate_ptr, w1_ptr, b1_ptr, w2_ptr, dpooled_ptr,
                                         dhidden_ptr, act_ptr, N, C, R, dpooled_scale, PRECISION: tl.constexpr,
                                         BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        # One program: BLOCK_N images of the backward of gate = sigmoid(silu(p @ w1.T + b1) @ w2.T + b2). It
        # recomputes the hidden layer h (BN, R), forms dhidden = ((dz @ w2) * silu'(h)) with dz = dgate * gate *
        # (1 - gate), writes dhidden and silu(h) (N, R) for the weight gradients, and dpooled = dhidden @ w1
        # times `dpooled_scale`.
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows_ok = rows < N
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R
        hidden = tl.zeros([BLOCK_N, BLOCK_R], dtype=tl.float32)
        dact = tl.zeros([BLOCK_N, BLOCK_R], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):  # (two loops, one product each: together they spill registers)
            c = c0 + tl.arange(0, BLOCK_C)
            ok = rows_ok[:, None] & (c < C)[None, :]
            w_ok = (c < C)[:, None] & r_ok[None, :]
            p = tl.load(pooled_ptr + rows[:, None] * C + c[None, :], mask=ok, other=0.0)
            hidden += tl.dot(p, tl.load(w1_ptr + r[None, :] * C + c[:, None], mask=w_ok, other=0.0),
                             input_precision=PRECISION)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            ok = rows_ok[:, None] & (c < C)[None, :]
            w_ok = (c < C)[:, None] & r_ok[None, :]
            gate = tl.load(gate_ptr + rows[:, None] * C + c[None, :], mask=ok, other=0.0)
            dz = tl.load(dgate_ptr + rows[:, None] * C + c[None, :], mask=ok, other=0.0) * gate * (1.0 - gate)
            dact += tl.dot(dz, tl.load(w2_ptr + c[:, None] * R + r[None, :], mask=w_ok, other=0.0),
                           input_precision=PRECISION)
        hidden += tl.load(b1_ptr + r, mask=r_ok, other=0.0)[None, :]
        sig = tl.sigmoid(hidden)
        dhidden = tl.where(r_ok[None, :], dact * (sig * (1.0 + hidden * (1.0 - sig))), 0.0)
        out_ok = rows_ok[:, None] & r_ok[None, :]
        tl.store(dhidden_ptr + rows[:, None] * R + r[None, :], dhidden, mask=out_ok)
        tl.store(act_ptr + rows[:, None] * R + r[None, :], hidden * sig, mask=out_ok)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            w1 = tl.load(w1_ptr + r[:, None] * C + c[None, :], mask=r_ok[:, None] & (c < C)[None, :], other=0.0)
            dp = tl.dot(dhidden, w1, input_precision=PRECISION) * dpooled_scale
            tl.store(dpooled_ptr + rows[:, None] * C + c[None, :], dp, mask=rows_ok[:, None] & (c < C)[None, :])

    @triton.jit
    def _excitation_backward_weights_kernel(pooled_ptr, dgate_ptr, gate_ptr, dhidden_ptr, act_ptr, dw1_ptr, db1_ptr,
                                            dw2_ptr, db2_ptr, N, C, R, PRECISION: tl.constexpr,
                                            BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        # One program: BLOCK_C channels of the SE's weight gradients, summed over all N images in order:
        # dw1[:, c] = dhidden.T @ p[:, c], dw2[c, :] = dz[:, c].T @ silu(h), db2[c] = sum of dz[:, c]; program 0
        # also sums db1 = sum of dhidden.
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        r = tl.arange(0, BLOCK_R)
        r_ok = r < R
        dw1 = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
        dw2 = tl.zeros([BLOCK_C, BLOCK_R], dtype=tl.float32)
        db2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        db1 = tl.zeros([BLOCK_R], dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            rows = n0 + tl.arange(0, BLOCK_N)
            rows_ok = rows < N
            ok = rows_ok[:, None] & c_ok[None, :]
            h_ok = rows_ok[:, None] & r_ok[None, :]
            gate = tl.load(gate_ptr + rows[:, None] * C + c[None, :], mask=ok, other=0.0)
            dz = tl.load(dgate_ptr + rows[:, None] * C + c[None, :], mask=ok, other=0.0) * gate * (1.0 - gate)
            dhidden_t = tl.load(dhidden_ptr + rows[None, :] * R + r[:, None], mask=r_ok[:, None] & rows_ok[None, :],
                                other=0.0)  # (BR, BN)
            dw1 += tl.dot(dhidden_t, tl.load(pooled_ptr + rows[:, None] * C + c[None, :], mask=ok, other=0.0),
                          input_precision=PRECISION)
            dw2 += tl.dot(tl.trans(dz), tl.load(act_ptr + rows[:, None] * R + r[None, :], mask=h_ok, other=0.0),
                          input_precision=PRECISION)
            db2 += tl.sum(dz, axis=0)
            db1 += tl.sum(dhidden_t, axis=1)
        tl.store(dw1_ptr + r[:, None] * C + c[None, :], dw1, mask=r_ok[:, None] & c_ok[None, :])
        tl.store(dw2_ptr + c[:, None] * R + r[None, :], dw2, mask=c_ok[:, None] & r_ok[None, :])
        tl.store(db2_ptr + c, db2, mask=c_ok)
        tl.store(db1_ptr + r, db1, mask=r_ok & (tl.program_id(0) == 0))


def _tiles(reduced: int, wide_c_up_to: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_R, BLOCK_C): 16 images (`tl.dot`'s least), the hidden layer padded to a power of two,
    64 channels a step where the hidden layer is at most `wide_c_up_to` wide, else 32 (32 under the
    interpreter)."""
    block_r = _pow2(reduced, 16, 1 << 16)
    return 16, block_r, (32 if INTERPRET or block_r > wide_c_up_to else 64)


def excitation(sums: torch.Tensor, pixels: int, reduce_weight: torch.Tensor, reduce_bias: torch.Tensor,
               expand_weight: torch.Tensor, expand_bias: torch.Tensor, *, tf32: bool = False) -> torch.Tensor:
    """The gate (N, C) float32 from channel sums (N, C) float32 over `pixels` pixels; the reduce conv's
    weight (R, C) and bias (R,), the expand conv's weight (C, R) and bias (C,), all float32 and contiguous.
    `tf32`: TF32 products whatever PyTorch's setting (the SE of 16-bit activations; module docstring)."""
    batch, channels = sums.shape
    reduced = reduce_weight.shape[0]
    choice = tuning.lookup("excitation", batch=batch, channels=channels, reduced=reduced)
    if (choice["kernel"] if choice is not None else default_kernel(batch, channels)) == "split":
        tiles = choice["tiles"] if choice is not None else [SPLIT_CHUNK]
        return excitation_split(sums, pixels, reduce_weight, reduce_bias, expand_weight, expand_bias, tf32=tf32,
                                chunk=tiles[0] if tiles else None)
    return excitation_single(sums, pixels, reduce_weight, reduce_bias, expand_weight, expand_bias, tf32=tf32)


SPLIT_CHUNK = 128  # channels a chunk of the split form where it is the default (run 9's fastest)


def default_kernel(batch: int, channels: int) -> str:
    """The gate's kernel where no tuning file names one: the split form ('split') on a GPU for 320 channels or
    more at a batch of 128 or more (run 9, module docstring), else the one-launch kernel ('single')."""
    return "split" if not INTERPRET and channels >= 320 and batch >= 128 else "single"


def excitation_single(sums: torch.Tensor, pixels: int, reduce_weight: torch.Tensor, reduce_bias: torch.Tensor,
                      expand_weight: torch.Tensor, expand_bias: torch.Tensor, *, tf32: bool = False) -> torch.Tensor:
    """`excitation` in one launch, one program per 16 images (module docstring)."""
    batch, channels = sums.shape
    reduced = reduce_weight.shape[0]
    gate = torch.empty_like(sums)
    block_n, block_r, block_c = _tiles(reduced, 64)  # the (BN, BR) hidden and a (BR, BC) tile in registers
    _excitation_kernel[(cdiv(batch, block_n),)](
        sums, reduce_weight, reduce_bias, expand_weight, expand_bias, gate, batch, channels, reduced, 1.0 / pixels,
        PRECISION=_precision(tf32), BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_R=block_r, **_options())
    return gate


def excitation_split(sums: torch.Tensor, pixels: int, reduce_weight: torch.Tensor, reduce_bias: torch.Tensor,
                     expand_weight: torch.Tensor, expand_bias: torch.Tensor, *, tf32: bool = False,
                     chunk: int | None = None) -> torch.Tensor:
    """`excitation` in two launches over chunks of `chunk` channels (a multiple of 32; None: 256, 64 under the
    interpreter): the same gate, its hidden layer summed in another order."""
    batch, channels = sums.shape
    reduced = reduce_weight.shape[0]
    block_n, block_r, block_c = _tiles(reduced, 64)
    chunk = chunk or (64 if INTERPRET else 256)
    if chunk <= 0 or chunk % 32:
        raise ValueError(f"the excitation's channel chunks must be a multiple of 32, got {chunk}")
    block_c = block_c if chunk % block_c == 0 else 32  # each chunk whole channel tiles
    chunks = cdiv(channels, chunk)
    partial = sums.new_empty((chunks, batch, reduced))
    gate = torch.empty_like(sums)
    grid = (cdiv(batch, block_n), chunks)
    precision = _precision(tf32)
    _excitation_partial_kernel[grid](sums, reduce_weight, partial, batch, channels, reduced, chunk,
                                     PRECISION=precision, BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_R=block_r,
                                     **_options())
    _excitation_gate_kernel[grid](partial, reduce_bias, expand_weight, expand_bias, gate, batch, channels, reduced,
                                  chunk, chunks, 1.0 / pixels, PRECISION=precision, BLOCK_N=block_n, BLOCK_C=block_c,
                                  BLOCK_R=block_r, **_options())
    return gate


def excitation_backward(dgate: torch.Tensor, gate: torch.Tensor, pooled: torch.Tensor, reduce_weight: torch.Tensor,
                        reduce_bias: torch.Tensor, expand_weight: torch.Tensor, dpooled_scale: float = 1.0, *,
                        tf32: bool = False) -> tuple[torch.Tensor, ...]:
    """The backward of `excitation(pooled, 1, ..., tf32=tf32)` in two launches, float32: (dpooled *
    dpooled_scale, dreduce_weight (R, C), dreduce_bias (R,), dexpand_weight (C, R), dexpand_bias (C,)), from
    dgate (N, C) and the forward's gate. The weight gradients are summed over the images in order
    (deterministic)."""
    batch, channels = pooled.shape
    reduced = reduce_weight.shape[0]
    block_n, block_r, block_c = _tiles(reduced, 32)  # with 64 channels, a hidden layer of 64 spills in IEEE float32
    dpooled = torch.empty_like(pooled)
    dhidden, act = (pooled.new_empty((batch, reduced)) for _ in range(2))
    _excitation_backward_rows_kernel[(cdiv(batch, block_n),)](
        pooled, dgate, gate, reduce_weight, reduce_bias, expand_weight, dpooled, dhidden, act, batch, channels,
        reduced, dpooled_scale, PRECISION=_precision(tf32), BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_R=block_r,
        **_options())
    dw1, dw2 = torch.empty_like(reduce_weight), torch.empty_like(expand_weight)
    db1, db2 = pooled.new_empty((reduced,)), pooled.new_empty((channels,))
    _excitation_backward_weights_kernel[(cdiv(channels, block_c),)](
        pooled, dgate, gate, dhidden, act, dw1, db1, dw2, db2, batch, channels, reduced, PRECISION=_precision(tf32),
        BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_R=block_r, **_options())
    return dpooled, dw1, db1, dw2, db2


def _precision(tf32: bool) -> str:
    """The products' precision on a GPU: TF32 when asked for or where PyTorch's float32 products take it, else
    IEEE float32 (and always under the interpreter)."""
    return "tf32" if (tf32 or torch.backends.cuda.matmul.allow_tf32) and not INTERPRET else "ieee"


def _options(warps: int = 4) -> dict:
    return {} if INTERPRET else {"num_warps": warps}
