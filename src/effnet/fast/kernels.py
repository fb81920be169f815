"""Triton kernels for MBConv inference on channels-last activations.

Two kernels cover every full-size tensor an inference MBConv block touches once its BatchNorms are
folded into the convolutions:

- `depthwise`: k x k depthwise convolution + bias + SiLU, with the squeeze-excitation's global sum
  accumulated in the same pass (one read of the input, one write of the output; the SE pool never
  re-reads the activation).
- `pointwise`: a 1 x 1 convolution as a matrix product over (pixels, channels), with bias, optional
  SiLU, the excitation gate applied to each image's weight tile (or to the operand as it is loaded;
  either way `x * gate` is never written) and the residual added in the epilogue.

Kernels run on CUDA tensors, or on CPU tensors under `TRITON_INTERPRET=1` (how the tests check
them without a GPU). `effnet.fast.ops` chooses between these and plain PyTorch.
"""
from __future__ import annotations

import functools
import os

import torch

from effnet.fast.grids import cdiv, next_power_of_2

try:
    import triton
    import triton.language as tl
except ImportError:  # effnet works without Triton: `ops` falls back to PyTorch
    triton = None

# Read when this module is imported, as Triton reads it when the kernels are defined.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Tune tile shapes per layer shape on first use (minutes for a whole network, so opt-in); else the
# fixed tiles measured in benchmarks/RESULTS.md.
AUTOTUNE = os.environ.get("EFFNET_TRITON_AUTOTUNE") == "1"


def alignment(*strides: int) -> int:
    """The largest power of two, up to 16, dividing every one of these strides and channel counts (in
    elements): what a kernel may tell the compiler they are multiples of (`_multiple`). Triton marks integer
    arguments divisible by 16 on its own, not by 8, so without it the rows of a map of 24, 40 or 56 bf16
    channels (48, 80, 112 bytes: 16-byte aligned) load one value per instruction."""
    align = 16
    for stride in strides:
        while stride % align:
            align //= 2
    return align


def map_alignment(*maps: torch.Tensor) -> int:
    """`alignment` of channels-last (N, C, H, W) maps' pixel strides: image, row and column (the last is the
    channel count, which the depthwise kernels hint too)."""
    return alignment(*(t.stride(dim) for t in maps for dim in (0, 2, 3)))


# The kernels' ACT: no activation, SiLU in float32 (exp and a division: two special-function instructions a
# value), SiLU through the multiprocessor's tanh (one; `_silu`).
NO_ACT, SILU, FAST_SILU = 0, 1, 2


def fast_silu(output: torch.Tensor) -> bool:
    """Whether a kernel writing `output` takes its SiLU as x/2 + x/2 tanh(x/2) on PTX's tanh.approx.f32: 16-bit
    outputs on a GPU of compute capability 7.5 or newer. Its absolute error on the sigmoid is about 2.5e-4, under
    the rounding of a bf16 or fp16 output of the same magnitude as x; float32 outputs (and the interpreter,
    which runs no PTX) keep exp and the division."""
    return (output.dtype in (torch.bfloat16, torch.float16) and output.is_cuda and not INTERPRET
            and _capability(output.device.index) >= (7, 5))


@functools.lru_cache(maxsize=None)
def _capability(index: int | None) -> tuple[int, int]:
    """CUDA device `index`'s compute capability, asked once (a launch asks for each kernel it starts)."""
    return torch.cuda.get_device_capability(index)


def act_mode(act: bool, output: torch.Tensor) -> int:
    """The ACT constant of a launch writing `output`: NO_ACT, SILU or, where `fast_silu`, FAST_SILU."""
    if not act:
        return NO_ACT
    return FAST_SILU if fast_silu(output) else SILU


def usable(tensor: torch.Tensor) -> bool:
    """Whether these kernels can run on `tensor`'s device."""
    return triton is not None and (tensor.is_cuda or (INTERPRET and tensor.device.type == "cpu"))


# The kernels compute their offsets in 32-bit integers (Triton's program ids and ranges, and the integer arguments
# that fit, are int32): a tensor of 2^31 elements or more, B7's widest at 600 px from a batch of about 120, would
# wrap around. Layers that large take the PyTorch path.
MAX_ELEMENTS = 2**31 - 1


def addressable(*elements: int) -> bool:
    """Whether tensors of these many elements lie within the kernels' 32-bit offsets (`MAX_ELEMENTS`)."""
    return max(elements) <= MAX_ELEMENTS


if triton is not None:

    @triton.jit
    def _multiple(value, ALIGN: tl.constexpr):
        """`value`, a runtime integer the host knows to be a multiple of ALIGN (`alignment`), as the compiler
        can see it is one. Kernels pass their channel counts and row strides through it, so that the loads
        of a channels-last row and the masks of its channel tail come in whole vectors (up to 16 bytes)."""
        return value // ALIGN * ALIGN

    @triton.jit
    def _sigmoid(x, ACT: tl.constexpr):
        """sigmoid(x) of a float32 tile: with ACT == FAST_SILU as 1/2 + tanh(x/2)/2, one tanh.approx
        instruction a value (`fast_silu`), else exp and a division (the training kernels' SiLU and its
        derivative)."""
        if ACT == 2:
            return 0.5 + 0.5 * tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x * 0.5],
                                                          dtype=tl.float32, is_pure=True, pack=1)
        return tl.sigmoid(x)

    @triton.jit
    def _silu(x, ACT: tl.constexpr):
        """x * sigmoid(x) of a float32 tile: with ACT == FAST_SILU as x/2 + x/2 tanh(x/2), one tanh.approx
        instruction a value (`fast_silu`), else exp and a division."""
        if ACT == 2:
            half = x * 0.5
            return half + half * tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [half],
                                                           dtype=tl.float32, is_pure=True, pack=1)
        return x * tl.sigmoid(x)

    @triton.jit
    def _row_tile(M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        """Program (i, j)'s BLOCK_M rows x BLOCK_C channels of an (M, C) row-major matrix (a channels-last map's
        pixels by channels): (rows, channels, the channels' mask, the tile's mask, its element offsets)."""
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        return rm, c, c_ok, (rm < M)[:, None] & c_ok[None, :], rm[:, None] * C + c[None, :]

    @triton.jit
    def _row_gates(gate_ptr, rm, start, pixels, M, K, k, k_ok):
        """The (N, K) gate's rows for a tile's rows rm (BM,) = start, start + 1, ..., at most `pixels` of them,
        at columns k (BK,): they lie in row `start`'s image and, past its last pixel, the next one, so two (BK,)
        gate rows are loaded and one picked per row ((BM, BK) float32)."""
        first = start // pixels
        boundary = (first + 1) * pixels
        return tl.where((rm < boundary)[:, None],
                        tl.load(gate_ptr + first * K + k, mask=k_ok, other=0.0)[None, :],
                        tl.load(gate_ptr + (first + 1) * K + k, mask=k_ok & (boundary < M), other=0.0)[None, :])

    @triton.jit
    def _dot(a, b, IEEE: tl.constexpr):
        """a @ b accumulated in float32; IEEE keeps float32 operands exact (no TF32)."""
        if IEEE:
            return tl.dot(a, b, input_precision="ieee")
        return tl.dot(a, b)

    @triton.jit
    def _pixel_tile(pid, H, W, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
        """Program `pid`'s BLOCK_H x BLOCK_W tile of an (N, H, W) pixel grid, tiles of one image in row-major
        order: its image and the tile's rows and columns (P,), pixels row-major (some past H or W)."""
        blocks_w = tl.cdiv(W, BLOCK_W)
        blocks_h = tl.cdiv(H, BLOCK_H)
        p = tl.arange(0, BLOCK_H * BLOCK_W)
        w = (pid % blocks_w) * BLOCK_W + p % BLOCK_W
        h = ((pid // blocks_w) % blocks_h) * BLOCK_H + p // BLOCK_W
        return pid // (blocks_w * blocks_h), h, w

    @triton.jit
    def _tap(ho, wo, wo_ok, kh, kw, stride, pad_h, pad_w, H, W):
        """Input row and columns that tap (kh, kw) reads for output row `ho`, columns `wo`, and
        which of them lie inside the image (the rest are the conv's zero padding)."""
        hi = ho * stride - pad_h + kh
        wi = wo * stride - pad_w + kw
        return hi, wi, (wi >= 0) & (wi < W) & wo_ok & (hi >= 0) & (hi < H)

    @triton.jit
    def _tap_weight(w_ptr, kh, kw, c, c_ok, C, K: tl.constexpr):
        """Tap (kh, kw)'s weights (laid out (k*k, C)) for the channel block `c` (BC,), in float32."""
        return tl.load(w_ptr + (kh * K + kw) * C + c, mask=c_ok, other=0.0).to(tl.float32)

    @triton.jit
    def _load_pixels(ptr, n, h, w, c, ok, c_ok, sn, sh, sw, sc):
        """The (P, BC) tile of image n's map at pixels (h, w) (P,) and channels c (BC,); 0 where masked."""
        return tl.load(ptr + n * sn + h[:, None] * sh + w[:, None] * sw + c[None, :] * sc,
                       mask=ok[:, None] & c_ok[None, :], other=0.0)

    @triton.jit
    def _store_pixels(ptr, value, n, h, w, c, ok, c_ok, sn, sh, sw, sc):
        """Store a (P, BC) tile at image n's pixels (h, w), channels c, in the map's dtype."""
        tl.store(ptr + n * sn + h[:, None] * sh + w[:, None] * sw + c[None, :] * sc,
                 value.to(ptr.dtype.element_ty), mask=ok[:, None] & c_ok[None, :])

    @triton.jit
    def _interior(top, left, stride, pad_h, pad_w, H, W, HO, WO, K: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_W: tl.constexpr):
        """Whether the BLOCK_H x BLOCK_W tile of output pixels at (top, left) lies inside the (HO, WO) output
        and every one of its k x k taps reads inside the (H, W) map: `_depthwise_taps` may load it unmasked."""
        return ((left * stride - pad_w >= 0) & ((left + BLOCK_W - 1) * stride - pad_w + K <= W)
                & (left + BLOCK_W <= WO) & (top * stride - pad_h >= 0)
                & ((top + BLOCK_H - 1) * stride - pad_h + K <= H) & (top + BLOCK_H <= HO))

    @triton.jit
    def _depthwise_taps(x_ptr, w_ptr, n, ho, wo, wo_ok, c, c_ok, stride, pad_h, pad_w, H, W, C, sxn, sxh, sxw, sxc,
                        K: tl.constexpr, MASKED: tl.constexpr, EVEN_C: tl.constexpr, WARM: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                        FLIP: tl.constexpr = False):
        """The k x k depthwise sums (P, BC) float32 at output pixels (ho, wo) (P,) of image n, channels c.
        MASKED tests every tap's pixels against the image (zero padding); without it the caller knows they lie
        inside, and with EVEN_C every channel of the block is real: the loads take no mask, so the compiler
        issues no tests and zeroes no lanes (with the bf16-to-float32 conversion, most of a tap's instructions
        besides its products).

        WARM (stride 1) takes the taps in two phases with a barrier between: first the taps whose windows
        together cover the tile's whole input halo (the corners of a 2-D tile, the two ends of every row of a
        one-row tile), then the rest, whose loads then find their lines in L1. Without it every tap's load is
        issued before the first returns and most of them go to L2 (run 3: L1 hit rate 33%, L2 throughput 68%,
        DRAM 28%): the input crosses L2 about k² times. The sums are the same, added in another order.

        FLIP takes tap (kh, kw)'s weight from row (k - 1 - kh, k - 1 - kw): the conv by the flipped kernel, as
        the input gradient of a stride-1 conv convolves the output gradient (`bn_depthwise`)."""
        acc = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], dtype=tl.float32)
        for phase in tl.static_range(2 if WARM else 1):
            for kh in tl.static_range(K):
                for kw in tl.static_range(K):
                    covers = (((kh % BLOCK_H == 0) | (kh == K - 1)) & ((kw % BLOCK_W == 0) | (kw == K - 1)))
                    if (WARM == 0) | (covers == (phase == 0)):
                        hi, wi, ok = _tap(ho, wo, wo_ok, kh, kw, stride, pad_h, pad_w, H, W)  # (P,) each
                        pointers = x_ptr + n * sxn + hi[:, None] * sxh + wi[:, None] * sxw + c[None, :] * sxc
                        if MASKED:
                            x = tl.load(pointers, mask=ok[:, None] & c_ok[None, :], other=0.0)  # (P, BC)
                        elif EVEN_C:
                            x = tl.load(pointers)
                        else:
                            x = tl.load(pointers, mask=c_ok[None, :], other=0.0)
                        row = K * K - 1 - (kh * K + kw) if FLIP else kh * K + kw
                        if EVEN_C:
                            w = tl.load(w_ptr + row * C + c)  # (BC,)
                        else:
                            w = tl.load(w_ptr + row * C + c, mask=c_ok, other=0.0)
                        acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
            if WARM and phase == 0:
                tl.debug_barrier()  # the first phase's products, hence its loads, are done: its lines are in L1
        return acc

    @triton.jit
    def _tile_taps(x_ptr, w_ptr, n, ho, wo, wo_ok, c, c_ok, top, left, stride, pad_h, pad_w, H, W, C, HO, WO,
                   sxn, sxh, sxw, sxc, K: tl.constexpr, EVEN_C: tl.constexpr, WARM: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, FLIP: tl.constexpr = False):
        """`_depthwise_taps` of the tile at (top, left) of the (HO, WO) output over the (H, W) map: unmasked
        where `_interior` says every tap reads inside, else every tap tested."""
        if _interior(top, left, stride, pad_h, pad_w, H, W, HO, WO, K, BLOCK_H, BLOCK_W):
            acc = _depthwise_taps(x_ptr, w_ptr, n, ho, wo, wo_ok, c, c_ok, stride, pad_h, pad_w, H, W, C,
                                  sxn, sxh, sxw, sxc, K, False, EVEN_C, WARM, BLOCK_H, BLOCK_W, BLOCK_C, FLIP)
        else:
            acc = _depthwise_taps(x_ptr, w_ptr, n, ho, wo, wo_ok, c, c_ok, stride, pad_h, pad_w, H, W, C,
                                  sxn, sxh, sxw, sxc, K, True, EVEN_C, WARM, BLOCK_H, BLOCK_W, BLOCK_C, FLIP)
        return acc

    @triton.jit
    def _depthwise_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr,
                          H, W, C, HO, WO, stride, pad_h, pad_w,
                          sxn, sxh, sxw, sxc, syn, syh, syw, syc,
                          K: tl.constexpr, ACT: tl.constexpr, POOL: tl.constexpr,
                          BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
                          ROWS: tl.constexpr, ALIGN: tl.constexpr, EVEN_C: tl.constexpr, WARM: tl.constexpr):
        # One program: ROWS tiles, one below the other, of BLOCK_H x BLOCK_W output pixels x BLOCK_C
        # channels. Its SE partial sums stay in registers across the tiles: one atomic add per
        # program, not per tile (the programs of one image all add into the same N x C sums). A tile whose
        # taps all read inside the image, and whose pixels all lie in the output, loads without masks.
        C, sxn, sxh, sxw = _multiple(C, ALIGN), _multiple(sxn, ALIGN), _multiple(sxh, ALIGN), _multiple(sxw, ALIGN)
        syn, syh, syw = _multiple(syn, ALIGN), _multiple(syh, ALIGN), _multiple(syw, ALIGN)
        pid = tl.program_id(0)
        blocks_w = tl.cdiv(WO, BLOCK_W)
        blocks_h = tl.cdiv(HO, BLOCK_H * ROWS)
        p = tl.arange(0, BLOCK_H * BLOCK_W)  # (P,) pixels of the tile, row-major
        left = (pid % blocks_w) * BLOCK_W
        wo = left + p % BLOCK_W  # (P,)
        top0 = ((pid // blocks_w) % blocks_h) * (BLOCK_H * ROWS)
        ho0 = top0 + p // BLOCK_W  # (P,)
        n = pid // (blocks_w * blocks_h)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BC,)
        c_ok = c < C
        wo_ok = wo < WO
        bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        pooled = tl.zeros([BLOCK_C], dtype=tl.float32)
        for r in range(ROWS):
            ho = ho0 + r * BLOCK_H  # (P,)
            top = top0 + r * BLOCK_H
            acc = _tile_taps(x_ptr, w_ptr, n, ho, wo, wo_ok, c, c_ok, top, left, stride, pad_h, pad_w, H, W, C, HO, WO,
                             sxn, sxh, sxw, sxc, K, EVEN_C, WARM, BLOCK_H, BLOCK_W, BLOCK_C)
            acc += bias[None, :]
            if ACT:
                acc = _silu(acc, ACT)
            out_ok = (wo_ok & (ho < HO))[:, None] & c_ok[None, :]
            pointers = y_ptr + n * syn + ho[:, None] * syh + wo[:, None] * syw + c[None, :] * syc
            tl.store(pointers, acc.to(y_ptr.dtype.element_ty), mask=out_ok)
            if POOL:
                pooled += tl.sum(tl.where(out_ok, acc, 0.0), axis=0)
        if POOL:
            # Partial sums of this program's tiles; the caller divides by HO * WO.
            tl.atomic_add(pool_ptr + n * C + c, pooled, mask=c_ok)

    @triton.jit
    def _pointwise_kernel(a_ptr, b_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr,
                          M, N, K, pixels,
                          s_am, s_ak, s_bk, s_bn, s_om, s_on, s_rm, s_rn,
                          GATE: tl.constexpr, ACT: tl.constexpr, RESIDUAL: tl.constexpr,
                          IEEE: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          ALIGN: tl.constexpr):
        # out (M, N) = act((a * gate[row // pixels]) @ b + bias) + residual; M = images x pixels.
        # GATE 0: no gate. GATE 1: the gate scales each loaded row of `a` (a tile may span images).
        # GATE 2: every program's rows lie in one image, so the gate scales the (BK, BN) tile of `b`
        # instead and `a` goes to the matrix units as loaded. GATE 3: as 1, for tiles of at most `pixels`
        # rows (two images at most: `_row_gates`), where 1 gathers a (BM, BK) block of the gate.
        N, K, s_am, s_bk = _multiple(N, ALIGN), _multiple(K, ALIGN), _multiple(s_am, ALIGN), _multiple(s_bk, ALIGN)
        s_om, s_rm = _multiple(s_om, ALIGN), _multiple(s_rm, ALIGN)
        pid = tl.program_id(0)
        blocks_n = tl.cdiv(N, BLOCK_N)
        pid_m = pid // blocks_n
        if GATE == 2:
            blocks_per_image = tl.cdiv(pixels, BLOCK_M)
            image0 = pid_m // blocks_per_image
            rm = image0 * pixels + (pid_m % blocks_per_image) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
            m_ok = (rm < (image0 + 1) * pixels) & (rm < M)
        else:
            rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
            m_ok = rm < M
        rn = (pid % blocks_n) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        rk = tl.arange(0, BLOCK_K)  # (BK,)
        n_ok = rn < N
        image = rm // pixels  # (BM,) which image's gate applies to each row
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + rk
            k_ok = k < K
            a = tl.load(a_ptr + rm[:, None] * s_am + k[None, :] * s_ak, mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0)  # (BM, BK)
            if GATE == 1 or GATE == 3:
                if GATE == 3:
                    gate = _row_gates(gate_ptr, rm, pid_m * BLOCK_M, pixels, M, K, k, k_ok)  # (BM, BK)
                else:
                    gate = tl.load(gate_ptr + image[:, None] * K + k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                                   other=0.0)  # (BM, BK)
                # Rounded back to the operand type, as `x * gate` in that type would be.
                a = (a.to(tl.float32) * gate).to(a_ptr.dtype.element_ty)
            b = tl.load(b_ptr + k[:, None] * s_bk + rn[None, :] * s_bn, mask=k_ok[:, None] & n_ok[None, :],
                        other=0.0)  # (BK, BN)
            if GATE == 2:
                gate = tl.load(gate_ptr + image0 * K + k, mask=k_ok, other=0.0)  # (BK,)
                b = (b.to(tl.float32) * gate[:, None]).to(b_ptr.dtype.element_ty)
            acc += _dot(a, b, IEEE)
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if ACT:
            acc = _silu(acc, ACT)
        out_ok = m_ok[:, None] & n_ok[None, :]
        if RESIDUAL:
            acc += tl.load(res_ptr + rm[:, None] * s_rm + rn[None, :] * s_rn, mask=out_ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + rm[:, None] * s_om + rn[None, :] * s_on, acc.to(out_ptr.dtype.element_ty), mask=out_ok)


    # With AUTOTUNE the sums are zeroed before each trial, since every trial adds into them.
    _depthwise_tuned = triton.autotune(
        configs=[triton.Config({"BLOCK_H": 1, "BLOCK_W": w, "BLOCK_C": c, "ROWS": r}, num_warps=warps)
                 for w, c, r, warps in ((16, 64, 4, 4), (8, 128, 4, 4), (32, 32, 8, 4), (16, 128, 8, 8),
                                        (8, 64, 8, 2))],
        key=["C", "HO", "WO", "stride", "K"], reset_to_zero=["pool_ptr"])(_depthwise_kernel)
    _pointwise_tuned = triton.autotune(
        configs=[triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=warps, num_stages=stages)
                 for m, n, k, warps, stages in ((128, 128, 64, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
                                                (256, 64, 32, 8, 3), (128, 32, 32, 4, 4), (64, 64, 64, 4, 3))],
        key=["M", "N", "K"])(_pointwise_kernel)


def _pow2(value: int, low: int, high: int) -> int:
    return max(low, min(high, next_power_of_2(value)))


def _depthwise_tiles(channels: int) -> tuple[int, int, int, int, int]:
    """The default tiles of a depthwise layer: 8 x 8 pixels x up to 32 channels, 4 warps, whatever its kernel and
    map. Measured best for 3 x 3 kernels on an H100 (benchmarks/RESULTS.md, run 3: 1.2-2.1x faster than one-row
    tiles) and for 5 x 5 on an H200 (run 8, on all six of B0's 5 x 5 layers: 1.26-1.62x faster than the row of up
    to 16 pixels x 64 channels that runs 3 and 5 had found best before the float32 taps). At stride 1 a 5 x 5
    tap's shifted tiles reach (8 + 4)^2 input pixels for 64 outputs, the row 5 x (16 + 4) for 16."""
    return 8, 8, _pow2(channels, 16, 32), 1, 4


def depthwise(x: torch.Tensor, weight_taps: torch.Tensor, bias: torch.Tensor, *, kernel_size: int, stride: int,
              padding: tuple[int, int], output_size: tuple[int, int], act: bool,
              pool: bool, tiles: tuple[int, ...] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Depthwise conv of NCHW-shaped `x` (channels-last memory) with weights laid out (k*k, C).

    `padding` is (top, left); bottom/right padding follows from `output_size`. Returns the
    channels-last output and, with `pool`, the float32 per-image channel sums of that output.
    `tiles` = (BLOCK_H, BLOCK_W, BLOCK_C, ROWS, num_warps[, warm]) overrides the tile choice (for tile
    sweeps): each program computes ROWS tiles of BLOCK_H x BLOCK_W output pixels x BLOCK_C channels; with
    `warm` 1 (stride 1) it takes its taps in two phases, the first loading the whole input halo
    (`_depthwise_taps`). Experimental: a sweep variant until a GPU run times it.
    """
    batch, channels, height, width = x.shape
    out_h, out_w = output_size
    y = torch.empty((batch, channels, out_h, out_w), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    sums = torch.zeros((batch, channels), device=x.device, dtype=torch.float32) if pool else y
    args = (x, weight_taps, bias, y, sums, height, width, channels, out_h, out_w, stride, padding[0], padding[1],
            x.stride(0), x.stride(2), x.stride(3), x.stride(1), y.stride(0), y.stride(2), y.stride(3), y.stride(1))
    align = map_alignment(x, y)
    if tiles is not None or not AUTOTUNE:
        if tiles is None:
            tiles = (1, 8, 16, 1, 4) if INTERPRET else _depthwise_tiles(channels)
        block_h, block_w, block_c, rows, warps, *warm = tiles
        if warm and warm[0] and stride != 1:
            raise ValueError("the warmed depthwise taps are for stride 1")
        grid = (batch * cdiv(out_h, block_h * rows) * cdiv(out_w, block_w),
                cdiv(channels, block_c))
        _depthwise_kernel[grid](*args, K=kernel_size, ACT=act_mode(act, y), POOL=pool, BLOCK_H=block_h,
                                BLOCK_W=block_w, BLOCK_C=block_c, ROWS=rows, ALIGN=align,
                                EVEN_C=channels % block_c == 0, WARM=bool(warm and warm[0]),
                                **({} if INTERPRET else {"num_warps": warps}))
    else:
        def grid(meta: dict) -> tuple[int, int]:
            return (batch * cdiv(out_h, meta["BLOCK_H"] * meta["ROWS"]) * cdiv(out_w, meta["BLOCK_W"]),
                    cdiv(channels, meta["BLOCK_C"]))

        _depthwise_tuned[grid](*args, K=kernel_size, ACT=act_mode(act, y), POOL=pool, ALIGN=align, EVEN_C=False,
                               WARM=False)
    return y, (sums if pool else None)


def matrix_views(x: torch.Tensor, out_channels: int, residual: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A new channels-last output for a 1x1 conv of channels-last `x`, and (pixels, channels)
    matrix views of the input, the output and the residual (the output where there is none)."""
    batch, channels, height, width = x.shape
    rows = batch * height * width
    out = torch.empty((batch, out_channels, height, width), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last)
    a = x.permute(0, 2, 3, 1).reshape(rows, channels)  # a view for channels-last input
    o = out.permute(0, 2, 3, 1).view(rows, out_channels)
    r = residual.permute(0, 2, 3, 1).reshape(rows, out_channels) if residual is not None else o
    return out, a, o, r


def _pointwise_tiles(pixels: int, in_channels: int, out_channels: int,
                     gate_mode: int) -> tuple[int, int, int, int, int]:
    """Tiles measured best on an H100 (benchmarks/RESULTS.md, run 3). With the gate on the weights a
    program's rows lie in one image, so small maps take 64-row tiles (less of a tile masked off)."""
    if gate_mode == 2:
        return (128 if pixels >= 128 else 64), (32 if out_channels <= 32 else 64), 64, 4, 3
    if out_channels >= 384:
        return 128, 128, 64, 8, 3
    return 128, 64, 64, 4, 3


def pointwise(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *, act: bool,
              gate: torch.Tensor | None = None, residual: torch.Tensor | None = None,
              tiles: tuple[int, int, int, int, int] | None = None, gate_weights: bool = True) -> torch.Tensor:
    """1x1 conv of NCHW-shaped, channels-last `x` with weights laid out (in, out).

    `gate` (N, in, float32) scales the input channels per image (squeeze-excitation);
    `residual` (N, out, H, W, channels-last) is added after the activation.
    `tiles` = (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) overrides the tile choice. With
    `gate_weights` (the default; 1.1-4x faster on an H100 in run 5, against a gate-rows path that gathered
    a (BLOCK_M, BLOCK_K) block of the gate per step) no program spans two images and the gate scales the
    weight tile instead of the activations: the same function, rounded at another place. Without it, tiles
    of at most one image's pixels load two gate rows per step and pick one per row (`_row_gates`).
    """
    batch, channels, height, width = x.shape
    out_channels = weight_t.shape[1]
    rows = batch * height * width
    out, a, o, r = matrix_views(x, out_channels, residual)
    args = (a, weight_t, bias, gate if gate is not None else bias, r, o, rows, out_channels, channels, height * width,
            a.stride(0), a.stride(1), weight_t.stride(0), weight_t.stride(1), o.stride(0), o.stride(1),
            r.stride(0), r.stride(1))
    gate_mode = 0 if gate is None else (2 if gate_weights else 1)
    flags = dict(GATE=gate_mode, ACT=act_mode(act, out), RESIDUAL=residual is not None,
                 IEEE=x.dtype == torch.float32,
                 ALIGN=alignment(a.stride(0), weight_t.stride(0), o.stride(0), r.stride(0)))

    def blocks_m(block_m: int) -> int:
        return batch * cdiv(height * width, block_m) if gate_mode == 2 else cdiv(rows, block_m)

    if tiles is None and INTERPRET:
        tiles = (16, 16, 16, 4, 1)
    if tiles is None and not AUTOTUNE:
        tiles = _pointwise_tiles(height * width, channels, out_channels, gate_mode)
    if tiles is not None:
        block_m, block_n, block_k, warps, stages = tiles
        if gate_mode == 1 and block_m <= height * width:  # a tile spans two images at most: two gate rows
            flags["GATE"] = 3
        grid = (blocks_m(block_m) * cdiv(out_channels, block_n),)
        _pointwise_kernel[grid](*args, **flags, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                                **({} if INTERPRET else {"num_warps": warps, "num_stages": stages}))
    else:
        def grid(meta: dict) -> tuple[int]:
            return (blocks_m(meta["BLOCK_M"]) * cdiv(out_channels, meta["BLOCK_N"]),)

        _pointwise_tuned[grid](*args, **flags)
    return out
