"""The Triton kernels of `bn_pointwise` (the training 1x1 conv with its batch norms fused at both ends):
the forward, the input gradient and the weight gradient, and the pieces of a tile they share. What each
computes, and how the host launches them, is `effnet.fast.bn_pointwise`'s to say.
"""
from __future__ import annotations

from effnet.fast.kernels import triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import _dot, _multiple, _sigmoid

    @triton.jit
    def _prologue(x, k, k_ok, scale_ptr, shift_ptr, gate_ptr, image, K,
                  AFFINE: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr):
        """a = act(x * scale + shift) * gate for a (rows, BK) tile of raw input at columns k (BK,),
        in float32, with the sigmoid and the pre-gate activation s for the backward. ACT is NO_ACT, SILU or
        FAST_SILU (`kernels.act_mode`: the sigmoid on the tanh instruction, for 16-bit maps on a GPU)."""
        z = x.to(tl.float32)
        if AFFINE:
            z = z * tl.load(scale_ptr + k, mask=k_ok, other=0.0)[None, :] + \
                tl.load(shift_ptr + k, mask=k_ok, other=0.0)[None, :]
        sig = _sigmoid(z, ACT)
        s = z * sig if ACT else z
        a = s
        if GATE:
            a = a * tl.load(gate_ptr + image * K + k, mask=k_ok, other=0.0)[None, :]
        return a, s, z, sig

    @triton.jit
    def _image_chunk(chunk, pixels, rows_per_program):
        """Chunk `chunk` of the pixel rows when each image's `pixels` rows are cut into chunks of
        `rows_per_program` (its last one short): its image and its rows [start, end)."""
        chunks = tl.cdiv(pixels, rows_per_program)
        image = chunk // chunks
        start = image * pixels + (chunk % chunks) * rows_per_program
        return image, start, tl.minimum(start + rows_per_program, (image + 1) * pixels)

    @triton.jit
    def _image_rows(pid_m, pixels, M, BLOCK_M: tl.constexpr):
        """Row block pid_m of the (M, channels) matrix when no block spans two images (each image has
        cdiv(pixels, BLOCK_M) blocks, its last one short): its image, rows (BM,) and which are real."""
        blocks_per_image = tl.cdiv(pixels, BLOCK_M)
        image = pid_m // blocks_per_image
        rm = image * pixels + (pid_m % blocks_per_image) * BLOCK_M + tl.arange(0, BLOCK_M)
        return image, rm, (rm < (image + 1) * pixels) & (rm < M)

    @triton.jit
    def _row_tile(pid, pixels, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        """Program pid's tile of an (M, C) matrix, channel blocks varying fastest: its row block pid_m, that
        block's image, rows (BM,) and which are real (`_image_rows`), its channels (BC,) and which are real."""
        blocks_c = tl.cdiv(C, BLOCK_C)
        pid_m = pid // blocks_c
        image, rm, m_ok = _image_rows(pid_m, pixels, M, BLOCK_M)
        c = (pid % blocks_c) * BLOCK_C + tl.arange(0, BLOCK_C)
        return pid_m, image, rm, m_ok, c, c < C

    @triton.jit
    def _grad_tile(dy_ptr, y_ptr, stats_ptr, rows, cols, ok, cols_ok, s_m, s_n, N, y_again,
                   RECOMPUTE: tl.constexpr):
        """g = dy + dmean / n + (2 dvar / n) (y - mean) for a (rows, cols) tile: the gradient reaching
        the raw output y, float32, 0 where masked. `stats_ptr` holds the rows dmean / n, 2 dvar / n
        and mean, N each. With RECOMPUTE, y is not loaded: `y_again` (rows, cols) float32 is the forward's
        product recomputed from its input tile (before its rounding to y's dtype)."""
        offsets = rows[:, None] * s_m + cols[None, :] * s_n
        dy = tl.load(dy_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        if RECOMPUTE:
            y = y_again
        else:
            y = tl.load(y_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        dmean = tl.load(stats_ptr + cols, mask=cols_ok, other=0.0)
        dvar = tl.load(stats_ptr + N + cols, mask=cols_ok, other=0.0)
        mean = tl.load(stats_ptr + 2 * N + cols, mask=cols_ok, other=0.0)
        return tl.where(ok, dy + dmean[None, :] + dvar[None, :] * (y - mean[None, :]), 0.0)

    @triton.jit
    def _pw_forward_kernel(x_ptr, w_ptr, scale_ptr, shift_ptr, gate_ptr, y_ptr, sums_ptr, m2_ptr,
                           M, N, K, pixels, s_xm, s_xk, s_wn, s_wk, s_ym, s_yn,
                           AFFINE: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr, IEEE: tl.constexpr,
                           ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # One program: BLOCK_M rows (pixels of ONE image, as `bn_pointwise._images` counts them) x BLOCK_N
        # output channels. Its column sums and sums of squared deviations from its own column means go to
        # row pid_m of the (blocks_m, N) buffers.
        N, K, s_xm, s_wn, s_ym = (_multiple(N, ALIGN), _multiple(K, ALIGN), _multiple(s_xm, ALIGN),
                                  _multiple(s_wn, ALIGN), _multiple(s_ym, ALIGN))  # (`bn_pointwise._flags`)
        pid_m, image, rm, m_ok, rn, n_ok = _row_tile(tl.program_id(0), pixels, M, N, BLOCK_M, BLOCK_N)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < K
            ok = m_ok[:, None] & k_ok[None, :]
            x = tl.load(x_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, mask=ok, other=0.0)  # (BM, BK)
            a, _, _, _ = _prologue(x, k, k_ok, scale_ptr, shift_ptr, gate_ptr, image, K, AFFINE, ACT, GATE)
            # Masked entries are 0 again (the shift moved them); rounded to the operand type, as the
            # normalised input would be stored in it.
            a = tl.where(ok, a, 0.0).to(x_ptr.dtype.element_ty)
            w = tl.load(w_ptr + rn[None, :] * s_wn + k[:, None] * s_wk,
                        mask=k_ok[:, None] & n_ok[None, :], other=0.0)  # (BK, BN)
            acc += _dot(a, w, IEEE)
        out_ok = m_ok[:, None] & n_ok[None, :]
        y = acc.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + rm[:, None] * s_ym + rn[None, :] * s_yn, y, mask=out_ok)
        y = tl.where(out_ok, y.to(tl.float32), 0.0)
        total = tl.sum(y, axis=0)  # (BN,)
        deviation = tl.where(out_ok, y - (total / tl.maximum(tl.sum(m_ok.to(tl.float32), axis=0), 1.0))[None, :], 0.0)
        tl.store(sums_ptr + pid_m * N + rn, total, mask=n_ok)
        tl.store(m2_ptr + pid_m * N + rn, tl.sum(deviation * deviation, axis=0), mask=n_ok)

    @triton.jit
    def _pw_input_grad_kernel(dy_ptr, y_ptr, stats_ptr, w_ptr, x_ptr, scale_ptr, shift_ptr, gate_ptr, pool_ptr,
                              dx_ptr, dscale_ptr, dshift_ptr,
                              M, N, K, pixels, s_ym, s_yn, s_wn, s_wk, s_xm, s_xk,
                              AFFINE: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr, POOL: tl.constexpr,
                              RECOMPUTE: tl.constexpr, IEEE: tl.constexpr, ALIGN: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
        # One program: BLOCK_M rows (pixels of ONE image, as `bn_pointwise._images` counts them) x BLOCK_K
        # input channels; da = g @ weight over all N output channels, then the prologue's derivatives in the
        # epilogue. dy and y share strides (both are (M, N) channels-last views), as do x and dx. With POOL,
        # `pool_ptr` (images, K) holds the gradient that an average pool of the activation s passes to each
        # of its pixels. With RECOMPUTE (an expansion's K input channels all in this program's block), y is
        # never loaded: each (BM, BN) tile of it is the forward's product again, a @ weight.T on the tiles here.
        N, K, s_xm, s_wn, s_ym = (_multiple(N, ALIGN), _multiple(K, ALIGN), _multiple(s_xm, ALIGN),
                                  _multiple(s_wn, ALIGN), _multiple(s_ym, ALIGN))  # (`bn_pointwise._flags`)
        pid_m, image, rm, m_ok, k, k_ok = _row_tile(tl.program_id(0), pixels, M, K, BLOCK_M, BLOCK_K)
        ok = m_ok[:, None] & k_ok[None, :]
        a = 0
        if RECOMPUTE:  # the forward's operand, rounded as it took it
            x = tl.load(x_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, mask=ok, other=0.0)  # (BM, BK)
            a, _, _, _ = _prologue(x, k, k_ok, scale_ptr, shift_ptr, gate_ptr, image, K, AFFINE, ACT, GATE)
            a = tl.where(ok, a, 0.0).to(x_ptr.dtype.element_ty)
        da = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            rn = n0 + tl.arange(0, BLOCK_N)
            n_ok = rn < N
            w = tl.load(w_ptr + rn[:, None] * s_wn + k[None, :] * s_wk,
                        mask=n_ok[:, None] & k_ok[None, :], other=0.0)  # (BN, BK)
            y_again = 0.0
            if RECOMPUTE:
                y_again = _dot(a, tl.trans(w), IEEE)  # (BM, BN)
            g = _grad_tile(dy_ptr, y_ptr, stats_ptr, rm, rn, m_ok[:, None] & n_ok[None, :], n_ok,
                           s_ym, s_yn, N, y_again, RECOMPUTE).to(dy_ptr.dtype.element_ty)  # (BM, BN)
            da += _dot(g, w, IEEE)
        # (loaded again with RECOMPUTE: its tile is narrow, and z and sig held across the loop cost registers)
        x = tl.load(x_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, mask=ok, other=0.0)  # (BM, BK)
        _, _, z, sig = _prologue(x, k, k_ok, scale_ptr, shift_ptr, gate_ptr, image, K, AFFINE, ACT, False)
        ds = da
        if GATE:
            ds = da * tl.load(gate_ptr + image * K + k, mask=k_ok, other=0.0)[None, :]
        if POOL:
            ds += tl.load(pool_ptr + image * K + k, mask=k_ok, other=0.0)[None, :]
        dz = ds * (sig * (1.0 + z * (1.0 - sig))) if ACT else ds
        dz = tl.where(ok, dz, 0.0)
        dx = dz
        if AFFINE:
            dx = dz * tl.load(scale_ptr + k, mask=k_ok, other=0.0)[None, :]
            tl.store(dscale_ptr + pid_m * K + k, tl.sum(dz * x.to(tl.float32), axis=0), mask=k_ok)
            tl.store(dshift_ptr + pid_m * K + k, tl.sum(dz, axis=0), mask=k_ok)
        tl.store(dx_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, dx.to(dx_ptr.dtype.element_ty),
                 mask=ok)

    @triton.jit
    def _weight_rows(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, acc, w, rn, n_ok, k, k_ok, start, end,
                     N, K, s_ym, s_yn, s_xm, s_xk, AFFINE: tl.constexpr, ACT: tl.constexpr, RECOMPUTE: tl.constexpr,
                     IEEE: tl.constexpr, BLOCK_M: tl.constexpr):
        """acc + g.T @ a over the rows [start, end), for output channels rn (BN,) and input channels k (BK,), a
        without a gate. With RECOMPUTE (k spans all K input channels), y's tile is a @ w.T again, not loaded. (Not
        through `_gated_tile`: its row masks held 21 more registers on B0's block 1 expansion, `compile_check.py`.)"""
        for m0 in range(start, end, BLOCK_M):
            rm = m0 + tl.arange(0, BLOCK_M)
            m_ok = rm < end
            ok = m_ok[:, None] & k_ok[None, :]
            x = tl.load(x_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, mask=ok,
                        other=0.0)  # (BM, BK)
            a, _, _, _ = _prologue(x, k, k_ok, scale_ptr, shift_ptr, scale_ptr, 0, K, AFFINE, ACT, False)
            # `a` rounded to the operand type, as the forward's product took it.
            a = tl.where(ok, a, 0.0).to(x_ptr.dtype.element_ty)
            y_again = 0.0
            if RECOMPUTE:
                y_again = _dot(a, tl.trans(w), IEEE)  # (BM, BN)
            g = _grad_tile(dy_ptr, y_ptr, stats_ptr, rm, rn, m_ok[:, None] & n_ok[None, :], n_ok,
                           s_ym, s_yn, N, y_again, RECOMPUTE).to(dy_ptr.dtype.element_ty)  # (BM, BN), 0 on masked
            acc += _dot(tl.trans(g), a, IEEE)
        return acc

    @triton.jit
    def _gated_tile(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, gate, w, rn, n_ok, k, k_ok, image, start,
                    local, span, N, K, s_ym, s_yn, s_xm, s_xk, AFFINE: tl.constexpr, ACT: tl.constexpr,
                    RECOMPUTE: tl.constexpr, IEEE: tl.constexpr):
        """g.T @ s, (BN, BK) float32, over rows start + local (BM,) of image `image`, those of local under `span`
        real; s its input's activation before the gate (BK,) (`_prologue`), rounded to the operand type."""
        rm = start + local
        m_ok = local < span
        ok = m_ok[:, None] & k_ok[None, :]
        x = tl.load(x_ptr + rm[:, None] * s_xm + k[None, :] * s_xk, mask=ok, other=0.0)  # (BM, BK)
        _, s, _, _ = _prologue(x, k, k_ok, scale_ptr, shift_ptr, scale_ptr, image, K, AFFINE, ACT, False)
        y_again = 0.0
        if RECOMPUTE:  # a = s * gate rounded to the operand type, as the forward's product took it
            y_again = _dot(tl.where(ok, s * gate[None, :], 0.0).to(x_ptr.dtype.element_ty), tl.trans(w), IEEE)
        g = _grad_tile(dy_ptr, y_ptr, stats_ptr, rm, rn, m_ok[:, None] & n_ok[None, :], n_ok,
                       s_ym, s_yn, N, y_again, RECOMPUTE).to(dy_ptr.dtype.element_ty)  # (BM, BN), 0 on masked
        return _dot(tl.trans(g), tl.where(ok, s, 0.0).to(x_ptr.dtype.element_ty), IEEE)

    @triton.jit
    def _gated_weight_rows(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, gate_ptr, w_ptr, dgate_ptr, acc, w,
                           rn, n_ok, k, k_ok, first, count, piece, pieces, pid_n, images, pixels, rows_per_program,
                           N, K, s_ym, s_yn, s_xm, s_xk, s_wn, s_wk, AFFINE: tl.constexpr, ACT: tl.constexpr,
                           RECOMPUTE: tl.constexpr, IEEE: tl.constexpr, ONE_IMAGE: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """acc + g.T @ a over `count` images from `first` (piece `piece` of each: `rows_per_program` rows from
        piece * rows_per_program, the image's last piece short), a = s * gate with one gate row (BK,) per image;
        each image's gradient of its gate (BK,) to row (pid_n, image * pieces + piece) of dgate_ptr. One product
        serves both: G = g.T @ s over an image's rows (`_gated_tile`), then acc += G * gate and dgate = the sum
        over this program's BN output channels of weight * G (the sum over the rows of (g @ weight) * s,
        reassociated; the host adds the blocks up). The rows of all the images are one loop, an image's last tile
        adding its G: a loop over the images around one over their rows held about 85 more registers a thread
        (`compile_check.py`). With ONE_IMAGE (count 1: a piece of one image) G alone accumulates, added once."""
        span = tl.minimum(rows_per_program, pixels - piece * rows_per_program)  # rows of each image taken here
        tiles = tl.cdiv(span, BLOCK_M)
        w_offsets = rn[:, None] * s_wn + k[None, :] * s_wk
        w_ok = n_ok[:, None] & k_ok[None, :]
        gram = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        if ONE_IMAGE:
            gate = tl.load(gate_ptr + first * K + k, mask=k_ok, other=0.0)
            for m0 in range(0, span, BLOCK_M):
                gram += _gated_tile(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, gate, w, rn, n_ok, k, k_ok,
                                    first, first * pixels + piece * rows_per_program, m0 + tl.arange(0, BLOCK_M), span,
                                    N, K, s_ym, s_yn, s_xm, s_xk, AFFINE, ACT, RECOMPUTE, IEEE)
            dgate = tl.sum(tl.load(w_ptr + w_offsets, mask=w_ok, other=0.0).to(tl.float32) * gram, axis=0)
            tl.store(dgate_ptr + ((pid_n * images + first) * pieces + piece) * K + k, dgate, mask=k_ok)
            return acc + gram * gate[None, :]
        for t in range(0, count * tiles):
            image = first + t // tiles
            gate = tl.load(gate_ptr + image * K + k, mask=k_ok, other=0.0)
            gram += _gated_tile(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, gate, w, rn, n_ok, k, k_ok,
                                image, image * pixels + piece * rows_per_program,
                                (t % tiles) * BLOCK_M + tl.arange(0, BLOCK_M), span, N, K, s_ym, s_yn, s_xm, s_xk,
                                AFFINE, ACT, RECOMPUTE, IEEE)
            if t % tiles == tiles - 1:  # the image's last tile
                acc += gram * gate[None, :]
                dgate = tl.sum(tl.load(w_ptr + w_offsets, mask=w_ok, other=0.0).to(tl.float32) * gram, axis=0)
                tl.store(dgate_ptr + ((pid_n * images + image) * pieces + piece) * K + k, dgate, mask=k_ok)
                gram = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        return acc

    @triton.jit
    def _pw_weight_grad_kernel(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, gate_ptr, w_ptr, parts_ptr,
                               dgate_ptr, N, K, images, pixels, rows_per_program, images_per_program,
                               s_ym, s_yn, s_xm, s_xk, s_wn, s_wk,
                               AFFINE: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr, RECOMPUTE: tl.constexpr,
                               IEEE: tl.constexpr, ALIGN: tl.constexpr, ONE_IMAGE: tl.constexpr,
                               BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr):
        # dweight (N, K) = g.T @ a, split over the rows (`bn_pointwise.weight_grad_split`): program (tile, chunk) takes
        # `images_per_program` whole images or, when that is 1, `rows_per_program` rows of one image (each image
        # cut into `pieces` chunks, its last one short), and writes its share of a BLOCK_N x BLOCK_K tile of
        # dweight to row `chunk` of the (chunks, N, K) buffer, which PyTorch sums (in order: deterministic).
        # Without GATE the host passes the batch as ONE image of all the rows. With GATE, each image's share
        # of dgate (the sum over its pixels of da * s, da's output channels limited to this program's) goes to
        # row (pid_n, image * pieces + piece) of dgate_ptr, from the same product as dweight's
        # (`_gated_weight_rows`).
        # With RECOMPUTE (one block of K), y's tiles are recomputed from a and the weight tile instead of loaded.
        N, K, s_xm, s_wn, s_ym = (_multiple(N, ALIGN), _multiple(K, ALIGN), _multiple(s_xm, ALIGN),
                                  _multiple(s_wn, ALIGN), _multiple(s_ym, ALIGN))  # (`bn_pointwise._flags`)
        pid = tl.program_id(0)
        blocks_k = tl.cdiv(K, BLOCK_K)
        pid_n = pid // blocks_k
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
        k = (pid % blocks_k) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BK,)
        n_ok = rn < N
        k_ok = k < K
        chunk = tl.program_id(1)
        pieces = tl.cdiv(pixels, rows_per_program)
        first, piece = (chunk // pieces) * images_per_program, chunk % pieces
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        w = 0
        if RECOMPUTE:
            w = tl.load(w_ptr + rn[:, None] * s_wn + k[None, :] * s_wk,
                        mask=n_ok[:, None] & k_ok[None, :], other=0.0)  # (BN, BK), in the operand type
        if GATE:
            acc = _gated_weight_rows(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, gate_ptr, w_ptr, dgate_ptr,
                                     acc, w, rn, n_ok, k, k_ok, first,
                                     tl.minimum(first + images_per_program, images) - first, piece, pieces, pid_n,
                                     images, pixels, rows_per_program, N, K, s_ym, s_yn, s_xm, s_xk, s_wn, s_wk,
                                     AFFINE, ACT, RECOMPUTE, IEEE, ONE_IMAGE, BLOCK_M, BLOCK_N, BLOCK_K)
        else:
            start = piece * rows_per_program
            acc = _weight_rows(dy_ptr, y_ptr, stats_ptr, x_ptr, scale_ptr, shift_ptr, acc, w, rn, n_ok, k, k_ok, start,
                               tl.minimum(start + rows_per_program, pixels), N, K, s_ym, s_yn, s_xm, s_xk, AFFINE,
                               ACT, RECOMPUTE, IEEE, BLOCK_M)
        tl.store(parts_ptr + (chunk * N + rn[:, None]) * K + k[None, :], acc, mask=n_ok[:, None] & k_ok[None, :])
