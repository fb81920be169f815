"""The squeeze-excitation gate of the fused inference block in one Triton launch.

From the float32 channel sums of the depthwise activation (N, C) (`kernels.depthwise` gathers them in
its epilogue), the gate is

    gate = sigmoid(expand(silu(reduce(sums / pixels))))          (N, C) float32

two tiny matrix products with a SiLU between. In PyTorch that is four launches (`ops.excitation`: two
`addmm`s, the SiLU, the sigmoid) of a few microseconds each on a GPU: 64 in a B0 forward, 128 in a B4 one
(run 6's profile: about 0.2 ms of B0's 7.1 ms). Here one program takes BLOCK_N images: the hidden layer
(BLOCK_N, R) stays in registers between the two products. Float32 throughout; the products take TF32 where
PyTorch's own float32 products would (`torch.backends.cuda.matmul.allow_tf32`), else IEEE float32 (slower:
B4's widest SE, 2688 x 112, then costs tens of microseconds), so it is the PyTorch path's function under the
same settings.
"""
from __future__ import annotations

import torch

from effnet.fast.kernels import INTERPRET, triton

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


def _pow2(value: int, low: int) -> int:
    return max(low, triton.next_power_of_2(value))


def excitation(sums: torch.Tensor, pixels: int, reduce_weight: torch.Tensor, reduce_bias: torch.Tensor,
               expand_weight: torch.Tensor, expand_bias: torch.Tensor) -> torch.Tensor:
    """The gate (N, C) float32 from channel sums (N, C) float32 over `pixels` pixels; the reduce conv's
    weight (R, C) and bias (R,), the expand conv's weight (C, R) and bias (C,), all float32 and contiguous."""
    batch, channels = sums.shape
    reduced = reduce_weight.shape[0]
    gate = torch.empty_like(sums)
    block_n = 16  # tl.dot's least
    block_r = _pow2(reduced, 16)
    block_c = 32 if INTERPRET else (64 if block_r <= 64 else 32)  # the (BN, BR) hidden and a (BR, BC) tile
    _excitation_kernel[(triton.cdiv(batch, block_n),)](
        sums, reduce_weight, reduce_bias, expand_weight, expand_bias, gate, batch, channels, reduced, 1.0 / pixels,
        PRECISION="tf32" if torch.backends.cuda.matmul.allow_tf32 and not INTERPRET else "ieee", BLOCK_N=block_n,
        BLOCK_C=block_c, BLOCK_R=block_r, **({} if INTERPRET else {"num_warps": 4}))
    return gate
