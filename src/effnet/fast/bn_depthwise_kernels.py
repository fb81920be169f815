"""The Triton kernels of `bn_depthwise` (the training depthwise conv with its batch norms fused at both ends):
the activation pass, the forward, the input gradient and the weight gradient. What each computes, and how the
host launches them, is `effnet.fast.bn_depthwise`'s to say.
"""
from __future__ import annotations

from effnet.fast.kernels import triton

if triton is not None:
    import triton.language as tl

    from effnet.fast.kernels import (_load_pixels, _multiple, _pixel_tile, _row_tile, _sigmoid, _store_pixels,
                                     _tap_weight, _tile_taps)

    @triton.jit
    def _dw_activate_kernel(x_ptr, scale_ptr, shift_ptr, a_ptr, M, C, ACT: tl.constexpr, ALIGN: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # a = act(x * scale + shift) over the (M, C) channels-last matrix, in x's dtype.
        C = _multiple(C, ALIGN)
        _, c, c_ok, ok, offsets = _row_tile(M, C, BLOCK_M, BLOCK_C)
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        z = x * tl.load(scale_ptr + c, mask=c_ok, other=0.0)[None, :] + tl.load(shift_ptr + c, mask=c_ok,
                                                                                other=0.0)[None, :]
        if ACT:
            z = z * _sigmoid(z, ACT)
        tl.store(a_ptr + offsets, z.to(a_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _grad_pixels(dy_ptr, y_ptr, stats_ptr, n, h, w, c, ok, c_ok, s_n, s_h, s_w, s_c, C):
        """g = dy + dmean / n + (2 dvar / n)(y - mean) at image n's pixels (h, w) (P,), channels c: float32,
        0 where masked. `stats_ptr` holds the rows dmean / n, 2 dvar / n and mean, C each."""
        dy = _load_pixels(dy_ptr, n, h, w, c, ok, c_ok, s_n, s_h, s_w, s_c).to(tl.float32)
        y = _load_pixels(y_ptr, n, h, w, c, ok, c_ok, s_n, s_h, s_w, s_c).to(tl.float32)
        dmean = tl.load(stats_ptr + c, mask=c_ok, other=0.0)
        dvar = tl.load(stats_ptr + C + c, mask=c_ok, other=0.0)
        mean = tl.load(stats_ptr + 2 * C + c, mask=c_ok, other=0.0)
        return tl.where(ok[:, None] & c_ok[None, :], dy + dmean[None, :] + dvar[None, :] * (y - mean[None, :]), 0.0)

    @triton.jit
    def _dw_forward_kernel(a_ptr, w_ptr, y_ptr, sums_ptr, m2_ptr, H, W, C, HO, WO, pad_h, pad_w,
                           s_n, s_h, s_w, s_c, o_n, o_h, o_w, o_c,
                           K: tl.constexpr, STRIDE: tl.constexpr, ALIGN: tl.constexpr, EVEN_C: tl.constexpr,
                           WARM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: a BLOCK_H x BLOCK_W tile of one image's output pixels x BLOCK_C channels, its taps summed
        # as the inference kernel sums them (`kernels._depthwise_taps`: without masks where every tap reads
        # inside the map and the tile lies inside the output; with WARM, in two phases). Its column sums and
        # sums of squared deviations from its own column means go to row `pid` of the buffers.
        C, s_n, s_h, s_w = _multiple(C, ALIGN), _multiple(s_n, ALIGN), _multiple(s_h, ALIGN), _multiple(s_w, ALIGN)
        o_n, o_h, o_w = _multiple(o_n, ALIGN), _multiple(o_h, ALIGN), _multiple(o_w, ALIGN)  # (`kernels.map_alignment`)
        pid = tl.program_id(0)
        n, ho, wo = _pixel_tile(pid, HO, WO, BLOCK_H, BLOCK_W)  # wo, ho: (P,)
        blocks_w = tl.cdiv(WO, BLOCK_W)
        left = (pid % blocks_w) * BLOCK_W
        top = ((pid // blocks_w) % tl.cdiv(HO, BLOCK_H)) * BLOCK_H
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        wo_ok = wo < WO
        out_ok = (ho < HO) & wo_ok
        acc = _tile_taps(a_ptr, w_ptr, n, ho, wo, wo_ok, c, c_ok, top, left, STRIDE, pad_h, pad_w, H, W, C, HO, WO,
                         s_n, s_h, s_w, s_c, K, EVEN_C, WARM, BLOCK_H, BLOCK_W, BLOCK_C)
        y = acc.to(y_ptr.dtype.element_ty)
        _store_pixels(y_ptr, y, n, ho, wo, c, out_ok, c_ok, o_n, o_h, o_w, o_c)
        ok = out_ok[:, None] & c_ok[None, :]
        y = tl.where(ok, y.to(tl.float32), 0.0)
        total = tl.sum(y, axis=0)
        count = tl.maximum(tl.sum(out_ok.to(tl.float32), axis=0), 1.0)
        deviation = tl.where(ok, y - (total / count)[None, :], 0.0)
        tl.store(sums_ptr + pid * C + c, total, mask=c_ok)
        tl.store(m2_ptr + pid * C + c, tl.sum(deviation * deviation, axis=0), mask=c_ok)

    @triton.jit
    def _dw_input_grad_kernel(dy_ptr, y_ptr, stats_ptr, w_ptr, x_ptr, scale_ptr, shift_ptr, dx_ptr,
                              dscale_ptr, dshift_ptr, H, W, C, HO, WO, pad_h, pad_w,
                              s_n, s_h, s_w, s_c, o_n, o_h, o_w, o_c,
                              K: tl.constexpr, STRIDE: tl.constexpr, AFFINE: tl.constexpr, ACT: tl.constexpr,
                              G_READY: tl.constexpr, ALIGN: tl.constexpr, EVEN_C: tl.constexpr, WARM: tl.constexpr,
                              BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_H x BLOCK_W input pixels of one image x BLOCK_C channels, all of one parity class
        # (rows ph, ph + STRIDE, ..., columns pw, pw + STRIDE, ...): a tap reaches all of them or none, so a
        # strided conv's input gradient skips the taps that do not line up (3 in 4 of them at stride 2)
        # instead of masking them lane by lane. da gathers g from every output pixel whose window covers
        # them; then dx = da * act'(z) * scale, with z = x * scale + shift. (s_*: the input's strides, shared
        # by x and dx; o_*: the output's, shared by dy and y.) With G_READY, dy_ptr holds g itself (the weight
        # gradient wrote it): one load a tap, where forming g loads dy and y. At stride 1 that makes da the conv
        # of g by the flipped kernel, padded k - 1 - pad: the forward's taps (`kernels._depthwise_taps`: no masks
        # where every tap reads inside g and the tile lies inside the map, the channel mask gone with EVEN_C,
        # WARM's two phases).
        C, s_n, s_h, s_w = _multiple(C, ALIGN), _multiple(s_n, ALIGN), _multiple(s_h, ALIGN), _multiple(s_w, ALIGN)
        o_n, o_h, o_w = _multiple(o_n, ALIGN), _multiple(o_h, ALIGN), _multiple(o_w, ALIGN)  # (`kernels.map_alignment`)
        pid = tl.program_id(0)
        image_class, i, j = _pixel_tile(pid, tl.cdiv(H, STRIDE), tl.cdiv(W, STRIDE), BLOCK_H, BLOCK_W)
        n, parity = image_class // (STRIDE * STRIDE), image_class % (STRIDE * STRIDE)
        ph, pw = parity // STRIDE, parity % STRIDE
        hi, wi = i * STRIDE + ph, j * STRIDE + pw  # (P,)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        in_ok = (hi < H) & (wi < W)
        if (STRIDE == 1) & G_READY:
            blocks_w = tl.cdiv(W, BLOCK_W)
            left = (pid % blocks_w) * BLOCK_W
            top = ((pid // blocks_w) % tl.cdiv(H, BLOCK_H)) * BLOCK_H
            flip_h, flip_w = K - 1 - pad_h, K - 1 - pad_w
            # g (HO, WO) is the map here, the input (H, W) the output
            da = _tile_taps(dy_ptr, w_ptr, n, hi, wi, wi < W, c, c_ok, top, left, 1, flip_h, flip_w, HO, WO, C, H, W,
                            o_n, o_h, o_w, o_c, K, EVEN_C, WARM, BLOCK_H, BLOCK_W, BLOCK_C, True)
        else:
            da = tl.zeros([BLOCK_H * BLOCK_W, BLOCK_C], dtype=tl.float32)
            # Loops the compiler does not unroll: unrolled, it hoists every tap's two loads and runs out of
            # registers (255 and 1.4 kB spilled for 5 x 5 taps, compile_check.py).
            for kh in range(K):
                dh = ph + pad_h - kh  # hi + pad_h - kh = ho * STRIDE where the tap lines up
                if dh % STRIDE == 0:
                    ho = i + dh // STRIDE
                    h_ok = in_ok & (ho >= 0) & (ho < HO)
                    for kw in range(K):
                        dw = pw + pad_w - kw
                        if dw % STRIDE == 0:
                            wo = j + dw // STRIDE
                            ok = h_ok & (wo >= 0) & (wo < WO)
                            if G_READY:
                                g = _load_pixels(dy_ptr, n, ho, wo, c, ok, c_ok, o_n, o_h, o_w, o_c).to(tl.float32)
                            else:
                                g = _grad_pixels(dy_ptr, y_ptr, stats_ptr, n, ho, wo, c, ok, c_ok, o_n, o_h, o_w,
                                                 o_c, C)
                            da += g * _tap_weight(w_ptr, kh, kw, c, c_ok, C, K)[None, :]
        dz = da
        if AFFINE:
            x = _load_pixels(x_ptr, n, hi, wi, c, in_ok, c_ok, s_n, s_h, s_w, s_c).to(tl.float32)
            scale = tl.load(scale_ptr + c, mask=c_ok, other=0.0)
            if ACT:
                z = x * scale[None, :] + tl.load(shift_ptr + c, mask=c_ok, other=0.0)[None, :]
                sig = _sigmoid(z, ACT)
                dz = da * (sig * (1.0 + z * (1.0 - sig)))
            dz = tl.where(in_ok[:, None] & c_ok[None, :], dz, 0.0)
            tl.store(dscale_ptr + pid * C + c, tl.sum(dz * x, axis=0), mask=c_ok)
            tl.store(dshift_ptr + pid * C + c, tl.sum(dz, axis=0), mask=c_ok)
            dz = dz * scale[None, :]
        _store_pixels(dx_ptr, dz, n, hi, wi, c, in_ok, c_ok, s_n, s_h, s_w, s_c)

    @triton.jit
    def _dw_weight_grad_kernel(dy_ptr, y_ptr, stats_ptr, a_ptr, dw_ptr, g_ptr, H, W, C, HO, WO, pad_h, pad_w,
                               BAND, N, images_per_program, s_n, s_h, s_w, s_c, o_n, o_h, o_w, o_c,
                               K: tl.constexpr, STRIDE: tl.constexpr, KK: tl.constexpr, WRITE_G: tl.constexpr,
                               ALIGN: tl.constexpr,
                               BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BAND output rows of each of `images_per_program` images (of N) x BLOCK_C channels, walked
        # in BLOCK_H x BLOCK_W tiles. Per tile, g is loaded once and every tap's input as one (KK, P, BC) block;
        # products accumulate elementwise and are summed over the pixels once, into row `pid` of the
        # (programs, KK, C) buffer. The programs visit every output pixel once: with WRITE_G, each stores its
        # tiles' g (in dy's dtype, at g_ptr) for the input gradient.
        C, s_n, s_h, s_w = _multiple(C, ALIGN), _multiple(s_n, ALIGN), _multiple(s_h, ALIGN), _multiple(s_w, ALIGN)
        o_n, o_h, o_w = _multiple(o_n, ALIGN), _multiple(o_h, ALIGN), _multiple(o_w, ALIGN)  # (`kernels.map_alignment`)
        pid = tl.program_id(0)
        bands = tl.cdiv(HO, BAND)
        first = (pid // bands) * images_per_program
        band_start = (pid % bands) * BAND
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        p = tl.arange(0, BLOCK_H * BLOCK_W)
        taps = tl.arange(0, KK)
        kh, kw = taps // K, taps % K  # (KK,)
        tap_ok = taps < K * K
        acc = tl.zeros([KK, BLOCK_H * BLOCK_W, BLOCK_C], dtype=tl.float32)
        # The images, the band's row tiles and each row's column tiles as one loop, the tile's corner (n, h0, w0)
        # stepped along (three nested loops held about 60 more registers a thread on the 5 x 5 layers, and a
        # corner divided out of the step count 100 more instructions: `compile_check.py`).
        band_end = tl.minimum(band_start + BAND, HO)
        steps = (tl.minimum(first + images_per_program, N) - first) * tl.cdiv(band_end - band_start, BLOCK_H) * \
            tl.cdiv(WO, BLOCK_W)
        n, h0, w0 = first, band_start, band_start * 0
        for _ in range(0, steps):
            ho, wo = h0 + p // BLOCK_W, w0 + p % BLOCK_W  # (P,)
            out_ok = (ho < HO) & (wo < WO)
            g = _grad_pixels(dy_ptr, y_ptr, stats_ptr, n, ho, wo, c, out_ok, c_ok, o_n, o_h, o_w, o_c, C)
            if WRITE_G:
                _store_pixels(g_ptr, g, n, ho, wo, c, out_ok, c_ok, o_n, o_h, o_w, o_c)
            hi = ho[None, :] * STRIDE - pad_h + kh[:, None]  # (KK, P)
            wi = wo[None, :] * STRIDE - pad_w + kw[:, None]
            ok = tap_ok[:, None] & out_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            a = tl.load(a_ptr + n * s_n + (hi * s_h + wi * s_w)[:, :, None] + (c * s_c)[None, None, :],
                        mask=ok[:, :, None] & c_ok[None, None, :], other=0.0)  # (KK, P, BC)
            acc += a.to(tl.float32) * g[None, :, :]
            w0 += BLOCK_W  # the next tile: along the row, then down the band, then the next image
            row_done = w0 >= WO
            w0 = tl.where(row_done, 0, w0)
            h0 = tl.where(row_done, h0 + BLOCK_H, h0)
            band_done = h0 >= band_end
            h0 = tl.where(band_done, band_start, h0)
            n = tl.where(band_done, n + 1, n)
        tl.store(dw_ptr + (pid * KK + taps[:, None]) * C + c[None, :], tl.sum(acc, axis=1),
                 mask=tap_ok[:, None] & c_ok[None, :])
