"""The launches `compile_check.py --sweeps` compiles: the tile sets and kernels the sweeps try beyond the defaults.

Each sweep's variants on a few of B0's and B4's layers, caught as `compile_check` catches a model's launches
(the real host code on PyTorch's meta device, specialised as Triton's JIT specialises a launch), so that a
variant that cannot compile for sm_90, or spills, shows here before a lease times it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_check import BATCH, Launch, _catching, _distinct, _meta  # noqa: E402

from effnet.fast import banded, kernels  # noqa: E402
from effnet.fast import bn_depthwise as bnd  # noqa: E402
from effnet.fast import bn_depthwise_banded as bdb  # noqa: E402
from effnet.fast import bn_depthwise_sliding as bds  # noqa: E402
from effnet.fast import bn_pointwise as bnp  # noqa: E402
from effnet.fast import depthwise_sliding  # noqa: E402


def sweep_launches() -> list[Launch]:
    """Every tile set `bn_pointwise_sweep.py` tries, on a B0 expansion (40 -> 240, 28 px) and a gated
    projection (240 -> 40), each pass as the sweep launches it, and the projection's library form's own kernels; the
    training depthwise forward and input gradient with their taps warmed on two of B0's stride-1 layers, the banded
    kernel as its training forms launch it, the sliding window's forward and input gradient
    (`bn_depthwise_sliding`) on three of B0's stride-1 layers and its forward on a stride-2 one; and
    `_inference_sweep_launches`."""
    from bn_pointwise_sweep import SWEEP

    launches, library = [], []
    for role, (cin, cout, gated) in {"expansion": (40, 240, False), "projection": (240, 40, True)}.items():
        x = _meta(BATCH, cin, 28, 28, channels_last=True)
        weight = _meta(cout, cin)
        scale = shift = _meta(cin, dtype=torch.float32) if gated else None
        gate = pool = _meta(BATCH, cin, dtype=torch.float32) if gated else None
        y = _meta(BATCH, cout, 28, 28, channels_last=True)
        stats = _meta(3, cout, dtype=torch.float32)
        passes = {"bn_pointwise": lambda t: bnp._forward(x, weight, scale, shift, gate, gated, t),
                  "bn_pointwise_input_grad": lambda t: bnp._input_grad(y, stats, x, y, weight, scale, shift, gate,
                                                                       gated, pool=pool, tiles=t),
                  "bn_pointwise_weight_grad": lambda t: bnp._weight_grad(y, stats, x, y, weight, scale, shift, gate,
                                                                         gated, t)}
        for op, tile_sets in SWEEP.items():
            for tiles in tile_sets:
                with _catching(launches, f"sweep {role} {tiles}"):
                    passes[op](tiles)
        if gated:  # the projection's passes through the library's products (`projection_blas`)
            for op, run in passes.items():
                with _catching(library, f"sweep {role} blas {op}"):
                    run(bnp.BLAS)
    launches = [launch for launch in launches if launch.kernel.fn.__module__.endswith("bn_pointwise_kernels")]
    # (its activation pass, with the gate's gradient, and its input gradient's pass with the gate and the pool)
    launches += [launch for launch in library if launch.kernel.fn.__name__ in ("_activation_kernel",
                                                                                "_affine_grad_kernel")]
    # the training depthwise forward and input gradient with their taps warmed, as `bn_depthwise_sweep.py` tries
    # them on stride-1 layers
    warm = []
    for channels, size, k in ((144, 56, 3), (240, 28, 5)):
        x = _meta(BATCH, channels, size, size, channels_last=True)
        scale, taps, padding = _meta(channels, dtype=torch.float32), _meta(k * k, channels), (k // 2, k // 2)
        with _catching(warm, f"B0 training warm {channels} ch {k}x{k} {size} px"):
            bnd._forward(x, taps, scale, scale, k, 1, padding, (size, size), True,
                         (*bnd._tiles("bn_depthwise", x, k, 1), 1))
            bnd._input_grad(x, _meta(3, channels, dtype=torch.float32), x, x, taps, scale, scale, k, 1, padding,
                            True, True, (*bnd._tiles("bn_depthwise_input_grad", x, k, 1), 1))
    warm = [launch for launch in warm if launch.kernel.fn.__name__ in ("_dw_forward_kernel", "_dw_input_grad_kernel")]
    # the training passes on the banded kernels (`bn_depthwise_banded`): the conv with no bias, no SiLU, no pool,
    # as its forms launch it, the weight gradient and the strided input gradient
    for channels, size, k, stride in ((144, 56, 3, 1), (240, 28, 5, 1), (96, 112, 3, 2), (144, 56, 5, 2)):
        x, out = _meta(BATCH, channels, size, size, channels_last=True), size // stride
        with _catching(warm, f"B0 training banded {channels} ch {k}x{k} s{stride} {size} px"):
            banded.banded_depthwise(x, _meta(k * k, channels), None, kernel_size=k, stride=stride,
                                    padding=(k // 2, k // 2), output_size=(out, out), act=False, pool=False)
            bdb.weight_grad(_meta(BATCH, channels, out, out, channels_last=True), x, k, stride, (k // 2, k // 2))
            if stride > 1:
                bdb.transposed_conv(_meta(BATCH, channels, out, out, channels_last=True), _meta(k * k, channels),
                                    (size, size), k, stride, (k // 2, k // 2))
    # the forward and the input gradient on the sliding window (`bn_depthwise_sliding`), stride 1
    for channels, size, k, stride in ((144, 56, 3, 1), (240, 28, 5, 1), (1152, 7, 5, 1), (144, 56, 5, 2)):
        x, scale, taps = _meta(BATCH, channels, size, size, channels_last=True), _meta(channels), _meta(k * k, channels)
        out = size // stride
        for tiles in (None, (*depthwise_sliding.default_tiles(channels, out, out), 1)):  # and loading ahead
            where = f"B0 training sliding {channels} ch {k}x{k} s{stride} {size} px {tiles or 'default'}"
            with _catching(warm, where):
                bds.forward(x, taps, k, stride, (k // 2, k // 2), (out, out), tiles)
                if stride == 1:
                    bds.input_grad(x, taps, x, scale, scale, k, 1, (k // 2, k // 2), True, tiles)
    warm = [launch for launch in warm if not launch.kernel.fn.__name__.startswith("_merge")]
    return _distinct(launches + warm + _inference_sweep_launches())


def _inference_sweep_launches() -> list[Launch]:
    """What `pointwise_sweep.py` tries beyond the defaults (batch 128, bf16): the streaming 1x1 kernel in each
    configuration on B4's two narrowest layers at 190 px (the 24 -> 144 expansion, the gated 24 -> 24
    projection with its residual), and the tiled kernel with the gate on the activations (two gate rows per
    tile) in its first tile sets on B4's gated 1632 -> 272 projection at 12 px; and the depthwise kernel with its
    taps warmed (`kernels._depthwise_taps`, WARM) in the tile sets `depthwise_sweep.py` tries it with first,
    on three of B0's stride-1 layers (3x3 at 56 px, 5x5 at 28 and 7 px); and the banded kernel (`effnet.fast.banded`)
    in every tile set the sweep tries, on those and two stride-2 layers (3x3 from 112 px, 5x5 from 56); the sliding
    kernel (`effnet.fast.depthwise_sliding`) in each of the sweep's tile sets on those three stride-1 layers and the
    two stride-2 ones; the
    activation pass beside cuDNN's depthwise conv (`effnet.fast.depthwise_cudnn`) on B4's 5 x 5 layer at 48 px; and
    the stem's tensor-core form (`stem._stem_dot_kernel`) in each of `stem_sweep.py`'s tile sets and its direct
    kernel (the default for bf16 until run 9), on B0's stem at 224 px and B4's at 380; and the split excitation
    (`excitation.excitation_split`) in each of `excitation_sweep.py`'s chunks and the one-launch kernel (the
    default there until run 9), on B0's widest SE at batch 256 and B4's at 128 (TF32)."""
    from depthwise_sweep import BANDED, banded_configs, sliding_configs
    from depthwise_sweep import SWEEP as DEPTHWISE_SWEEP
    from pointwise_sweep import STREAM_SWEEP, SWEEP
    from excitation_sweep import CHUNKS
    from stem_sweep import SWEEP as STEM_SWEEP

    from effnet.fast import depthwise_cudnn, excitation, streaming
    from effnet.fast import stem as stem_module

    launches = []
    for channels, size, k in ((144, 56, 3), (240, 28, 5), (1152, 7, 5)):
        x = _meta(BATCH, channels, size, size, channels_last=True)
        for tiles in dict.fromkeys([kernels._depthwise_tiles(channels), DEPTHWISE_SWEEP[0]]):
            with _catching(launches, f"B0 warm {channels} ch {k}x{k} {size} px {tiles}"):
                kernels.depthwise(x, _meta(k * k, channels, dtype=torch.float32), _meta(channels), kernel_size=k,
                                  stride=1,
                                  padding=(k // 2, k // 2), output_size=(size, size), act=True, pool=True,
                                  tiles=(*tiles, 1))
    for channels, size, k, stride in ((144, 56, 3, 1), (240, 28, 5, 1), (1152, 7, 5, 1), (96, 112, 3, 2),
                                      (144, 56, 5, 2)):
        x, out = _meta(BATCH, channels, size, size, channels_last=True), size // stride
        for tiles in banded_configs(out, k, stride, len(BANDED) + 1):
            with _catching(launches, f"B0 banded {channels} ch {k}x{k} s{stride} {size} px {tiles}"):
                banded.banded_depthwise(x, _meta(k * k, channels, dtype=torch.float32), _meta(channels), kernel_size=k,
                                        stride=stride, padding=(k // 2, k // 2), output_size=(out, out), act=True,
                                        pool=True, tiles=tiles)
    for channels, size, k, stride in ((144, 56, 3, 1), (240, 28, 5, 1), (1152, 7, 5, 1), (96, 112, 3, 2),
                                      (144, 56, 5, 2)):
        x, out = _meta(BATCH, channels, size, size, channels_last=True), size // stride
        for tiles in sliding_configs(channels, out, 4):
            with _catching(launches, f"B0 sliding {channels} ch {k}x{k} s{stride} {size} px {tiles}"):
                depthwise_sliding.depthwise_sliding(x, _meta(k * k, channels, dtype=torch.float32), _meta(channels),
                                                    kernel_size=k, stride=stride, padding=(k // 2, k // 2),
                                                    output_size=(out, out), act=True, pool=True, tiles=tiles)
    x = _meta(BATCH, 1632, 12, 12, channels_last=True)
    for tiles in (None, *SWEEP[:2]):
        with _catching(launches, f"B4 gate-rows 1632 -> 272 {tiles or 'default'}"):
            kernels.pointwise(x, _meta(1632, 272), _meta(272), act=False, gate=_meta(BATCH, 1632, dtype=torch.float32),
                              residual=_meta(BATCH, 272, 12, 12, channels_last=True), tiles=tiles, gate_weights=False)
    x = _meta(BATCH, 24, 190, 190, channels_last=True)
    for name, cout, gate in (("expansion", 144, None), ("projection", 24, _meta(BATCH, 24, dtype=torch.float32))):
        weight_t, bias = _meta(24, cout), _meta(cout)
        residual = _meta(BATCH, cout, 190, 190, channels_last=True) if gate is not None else None
        for tiles in STREAM_SWEEP:
            with _catching(launches, f"B4 stream {name} {tiles}"):
                streaming.pointwise_streaming(x, weight_t, bias, act=gate is None, gate=gate, residual=residual,
                                              tiles=tiles)
    x = _meta(BATCH, 336, 48, 48, channels_last=True)
    with _catching(launches, "B4 cudnn 336 ch 5x5 48 px"):
        depthwise_cudnn.depthwise_cudnn(x, _meta(25, 336, dtype=torch.float32), _meta(336), kernel_size=5, stride=1,
                                        padding=(2, 2), output_size=(48, 48), act=True, pool=True)
    for model, size, out_channels in (("B0", 224, 32), ("B4", 380, 48)):
        x = _meta(BATCH, 3, size, size, dtype=torch.float32)
        y = _meta(BATCH, out_channels, size // 2, size // 2, channels_last=True)
        for tiles in STEM_SWEEP:
            with _catching(launches, f"{model} stem dot {tiles}"):
                stem_module._launch_dot(x, _meta(27, out_channels), _meta(out_channels), y, kernel_size=3, stride=2,
                                        padding=(1, 1), tiles=tiles)
        with _catching(launches, f"{model} stem direct"):
            stem_module._launch_direct(x, _meta(27, out_channels), _meta(out_channels), y, kernel_size=3, stride=2,
                                       padding=(1, 1))
    for model, batch, channels, reduced in (("B0", 256, 1152, 48), ("B4", 128, 2688, 112)):
        weights = [_meta(*shape, dtype=torch.float32) for shape in ((reduced, channels), (reduced,),
                                                                    (channels, reduced), (channels,))]
        for chunk in CHUNKS:
            with _catching(launches, f"{model} excitation split {channels} -> {reduced} chunk {chunk}"):
                excitation.excitation_split(_meta(batch, channels, dtype=torch.float32), 49, *weights, tf32=True,
                                            chunk=chunk)
        with _catching(launches, f"{model} excitation single {channels} -> {reduced}"):
            excitation.excitation_single(_meta(batch, channels, dtype=torch.float32), 49, *weights, tf32=True)
    return launches
