"""Where the training depthwise conv with fused batch norms stands against PyTorch, layer by layer.

    PYTHONPATH=src python benchmarks/bn_depthwise_sweep.py --out results/        # on a GPU, ~2 minutes
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/bn_depthwise_sweep.py --device cpu --batch 1 \\
        --size 16 --configs 2 --layers 0

For every distinct depthwise conv of an MBConv block (B0 at 224 px, training batch 128 by default) it
times a training step of that layer on channels-last activations, its input the expansion's raw
output with that output's batch norm and SiLU to apply:

- `bn_depthwise` (effnet.fast.bn_depthwise): its forward (the activation pass and the conv with the
  output's statistics), weight gradient (which writes g, the gradient reaching the raw output) and input
  gradient (reading g, with the activation's backward), each with its default tiles and each sweep
  configuration, timed apart; on stride-1 layers the forward and the input gradient with their default
  tiles and their taps warmed (`kernels._depthwise_taps`, WARM: a fifth tile value of 1); and, as column
  "dx dy,y", the input gradient forming g from dy and y at every tap itself, as it did before session 14
  (default tiles); and each pass through cuDNN ("fwd cudnn": the activation pass, cuDNN's conv and a pass for
  the statistics; "dx cudnn": cuDNN's input gradient of g and the activation's backward; "dw cudnn": a pass
  writing g and cuDNN's weight gradient; `bn_depthwise_cudnn`), where cuDNN's symmetric padding is the conv's;
  and each pass on the banded tensor-core kernels ("fwd banded", "dx banded", "dw banded": `bn_depthwise_banded`,
  the same element-wise passes as the cuDNN forms); and the forward and, at stride 1, the input gradient on the
  sliding window ("fwd sliding", "dx sliding": `bn_depthwise_sliding`, their epilogues fused as the Triton
  kernels'; "... ahead": each input row loaded a step ahead of its products).
- `bn_depthwise_reference`, the same function in PyTorch (affine map, SiLU, `F.conv2d`, float32
  statistics), eager ("torch") and, unless `--no-compile`, compiled by Inductor ("compiled": the
  element-wise work fused around cuDNN's depthwise conv, as compiled timm trains).
- cuDNN's bare depthwise conv, forward and both gradients ("cudnn").

Each row reports the fused step's effective bandwidth at the least bytes it must move: forward x + a
+ a + y (the activation written and read back), weight gradient dy + y + a + g, input gradient g + x +
dx. With `--tuning FILE` a configuration that beats the default by 3% plus the layer's noise is
recorded per pass (`bn_depthwise`, `bn_depthwise_input_grad`, `bn_depthwise_weight_grad`).
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.runtime.errors import OutOfResources

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import bn_depthwise as bnd  # noqa: E402
from effnet.fast import bn_depthwise_banded as bdb  # noqa: E402
from effnet.fast import bn_depthwise_cudnn as bdc  # noqa: E402
from effnet.fast import bn_depthwise_sliding as bds  # noqa: E402
from effnet.fast.depthwise_sliding import default_tiles as sliding_tiles  # noqa: E402
from effnet.fast import ops, tuning  # noqa: E402
from depthwise_sweep import layer_shapes  # noqa: E402
from sweep_common import (AGAIN, finish, noise, outcome, print_step_totals, promote, sweep_layers,  # noqa: E402
                          sweep_dtype, sweep_parser, sweep_timer)

# (BLOCK_H, BLOCK_W, BLOCK_C, num_warps) for the forward and the input gradient
SWEEP = [(4, 16, 32, 4), (1, 16, 64, 4), (8, 16, 32, 8), (8, 8, 64, 4)]
# (BAND, BLOCK_H, BLOCK_W, BLOCK_C, num_warps) for the weight gradient, none spilling registers on sm_90 for
# 3 x 3 or 5 x 5 taps (benchmarks/compile_check.py; 32 channels x 16 pixels x 32 taps on 4 warps does)
WEIGHT_SWEEP = [(32, 2, 8, 32, 8), (16, 2, 8, 16, 4), (8, 1, 16, 16, 4), (16, 2, 16, 16, 8)]


def sweep_layer(args: argparse.Namespace, shape: tuple, count: int, timer, device: torch.device,
                dtype: torch.dtype, bound: float, compiled_reference) -> dict:
    """One depthwise layer shape: the three fused passes with each configuration, and PyTorch's step, each
    checked and timed; prints the layer's line and returns its row."""
    channels, height, width, k, stride, same = shape
    torch.manual_seed(0)
    x = torch.randn(args.batch, channels, height, width, device=device).to(dtype).contiguous(
        memory_format=torch.channels_last)
    weight = (torch.randn(channels, 1, k, k, device=device) / k).to(dtype)
    scale, shift = torch.rand(channels, device=device) + 0.5, torch.randn(channels, device=device) * 0.3
    output_size, padding = ops.conv_geometry(x, k, stride, same)
    options = dict(stride=stride, padding=padding, output_size=output_size, act=True)
    dy = torch.randn(args.batch, channels, *output_size, device=device).to(dtype).contiguous(
        memory_format=torch.channels_last)
    dmean, dvar = torch.randn(channels, device=device), torch.randn(channels, device=device)

    def pytorch_step(function, precision=None):
        inputs = [t.detach().to(precision or t.dtype).requires_grad_() for t in (x, weight, scale, shift)]
        y, mean, var = function(*inputs, **options)
        upstream = [dy.to(precision or dy.dtype), dmean, dvar]
        return [y, mean, var, *torch.autograd.grad([y, mean, var], inputs, upstream)]

    expected = [t.float() for t in pytorch_step(bnd.bn_depthwise_reference, torch.float32)]
    taps = weight.flatten(1).t().contiguous()

    def forward(tiles=None):
        return bnd._forward(x, taps, scale, shift, k, stride, padding, output_size, True, tiles)

    y, mean, _, a = forward()
    values = y.numel() // channels
    stats = torch.stack([dmean / values, 2.0 * dvar / values, mean])  # as the operator's autograd formula builds it

    # As the backward runs them: the weight gradient first, writing g, which the input gradient reads.
    def weight_grad(tiles=None):
        return bnd._weight_grad(dy, stats, x, a, y, k, stride, padding, scale, True, tiles)

    g = weight_grad()[1]

    def input_grad(tiles=None, from_dy=False):
        return bnd._input_grad(dy if from_dy else g, stats, x, y, taps, scale, shift, k, stride, padding, True,
                               not from_dy, tiles)

    def check(tiles, weight_tiles) -> float:
        y_, mean_, var_, _ = forward(tiles)
        dx, (dscale, dshift) = input_grad(tiles)
        dtaps = weight_grad(weight_tiles)[0]
        dweight = dtaps.t().reshape(channels, 1, k, k)
        fused = [y_, mean_, var_, dx, dweight, dscale, dshift]
        return max(relative_error(a_.float(), b_) for a_, b_ in zip(fused, expected, strict=True))

    errors = {}
    times = {"torch": timer.median(partial(pytorch_step, bnd.bn_depthwise_reference)),
             "cudnn": timer.median(partial(_conv_step, x, weight, stride, same, dy))}
    if compiled_reference is not None:
        times["compiled"] = timer.median(partial(pytorch_step, compiled_reference))
    # The input gradient forming g from dy and y at every tap (before session 14), default tiles.
    times["dx from dy, y"] = timer.median(partial(input_grad, from_dy=True))
    errors["dx from dy, y"] = relative_error(input_grad(from_dy=True)[0].float(), expected[3])
    configs = {"default": (None, None), **{f"{t} / {w}": (t, w) for t, w in zip(SWEEP[:args.configs],
                                                                               WEIGHT_SWEEP[:args.configs])}}
    skipped = []
    passes = {"bn_depthwise": {}, "bn_depthwise_input_grad": {}, "bn_depthwise_weight_grad": {}}
    for name, (tiles, weight_tiles) in configs.items():
        try:
            errors[name] = check(tiles, weight_tiles)
        except OutOfResources:
            skipped.append(name)
            continue
        passes["bn_depthwise"][name] = timer.median(partial(forward, tiles))
        passes["bn_depthwise_input_grad"][name] = timer.median(partial(input_grad, tiles))
        passes["bn_depthwise_weight_grad"][name] = timer.median(partial(weight_grad, weight_tiles))
    # The forward and the input gradient with their taps in two phases (`kernels._depthwise_taps`, WARM): stride 1
    warm = {op: {} for op in passes}  # other kernels' choices (the warmed taps, cuDNN's gradients) by pass
    for op, function, outputs in (("bn_depthwise", forward, slice(0, 3)), ("bn_depthwise_input_grad", input_grad,
                                                                            slice(3, 4))):
        if stride != 1:
            break
        tiles = (*bnd._tiles(op, x, k, stride)[:4], 1)
        name = f"{tiles} warm" + ("" if op == "bn_depthwise" else " dx")
        try:
            errors[name] = max(relative_error(a_.float(), b_) for a_, b_ in zip(function(tiles)[:3], expected[outputs]))
            passes[op][name] = timer.median(partial(function, tiles))
            warm[op][name] = ("tiled", tiles, {})
        except OutOfResources:
            skipped.append(name)
    # The passes through cuDNN (`bn_depthwise_cudnn`) where its symmetric padding is the conv's: the forward with
    # its activation pass, the weight gradient with its own pass writing g (as the Triton one writes it), the
    # input gradient from g.
    cudnn_functions = {}
    if bdc.takes(x, k, stride, padding, output_size):
        def weight_grad_cudnn():
            return bdc.weight_grad(bdc.output_gradient(dy, stats, y), a, taps, k, stride, padding)

        def input_grad_cudnn():
            return bdc.input_grad(g, taps, x, scale, shift, k, stride, padding, True)

        def forward_cudnn():  # with the activation pass, as `forward` times it
            return bdc.forward(bnd._activate(x, scale, shift, True), taps, k, stride, padding)

        errors["fwd cudnn"] = max(relative_error(value.float(), reference) for value, reference in zip(
            forward_cudnn(), expected[:3], strict=True))
        errors["dw cudnn"] = relative_error(weight_grad_cudnn().t().reshape(channels, 1, k, k), expected[4])
        dx, daffine = input_grad_cudnn()
        errors["dx cudnn"] = max(relative_error(value.float(), reference) for value, reference in zip(
            (dx, *daffine), (expected[3], expected[5], expected[6]), strict=True))
        for op, name, function in (("bn_depthwise", "fwd cudnn", forward_cudnn),
                                   ("bn_depthwise_weight_grad", "dw cudnn", weight_grad_cudnn),
                                   ("bn_depthwise_input_grad", "dx cudnn", input_grad_cudnn)):
            passes[op][name] = timer.median(function)
            warm[op][name] = ("cudnn", (), {})
            cudnn_functions[op] = function
    # Each pass on the banded tensor-core kernels (`bn_depthwise_banded`)
    def forward_banded():  # with the activation pass, as `forward` times it
        return bdb.forward(bnd._activate(x, scale, shift, True), taps, k, stride, padding, output_size)

    def input_grad_banded():
        return bdb.input_grad(g, taps, x, scale, shift, k, stride, padding, True)

    def weight_grad_banded():  # with its pass writing g, as the Triton kernel writes it
        return (bdb.weight_grad(bdc.output_gradient(dy, stats, y), a, k, stride, padding).t().reshape(
            channels, 1, k, k),)

    banded = [("bn_depthwise", "fwd banded", forward_banded, expected[:3]),
              ("bn_depthwise_weight_grad", "dw banded", weight_grad_banded, expected[4:5]),
              ("bn_depthwise_input_grad", "dx banded", input_grad_banded,  # (dx, daffine: dscale and dshift)
               (expected[3], torch.stack((expected[5], expected[6]))))]
    for op, name, function, references in banded:
        errors[name] = max(relative_error(value.float(), reference) for value, reference in zip(
            function(), references, strict=True))
        passes[op][name] = timer.median(function)
        warm[op][name] = ("banded", (), {})
    # The forward (stride 1 or 2) and the input gradient (stride 1) on the sliding window (`bn_depthwise_sliding`):
    # its default tiles, then each input row loaded a step ahead of its products
    for suffix, tiles in (("", ()), (" ahead", (*sliding_tiles(channels, *output_size), 1))):
        def forward_sliding(tiles=tiles):  # with the activation pass, as `forward` times it
            return bds.forward(bnd._activate(x, scale, shift, True), taps, k, stride, padding, output_size,
                               tiles or None)

        def input_grad_sliding(tiles=tiles):
            return bds.input_grad(g, taps, x, scale, shift, k, stride, padding, True, tiles or None)

        sliding = [("bn_depthwise", "fwd sliding" + suffix, forward_sliding, expected[:3])] * bds.takes(k, stride)
        sliding += [("bn_depthwise_input_grad", "dx sliding" + suffix, input_grad_sliding,
                     (expected[3], torch.stack((expected[5], expected[6]))))] * bds.takes(k, stride, True)
        for op, name, function, references in sliding:
            errors[name] = max(relative_error(value.float(), reference) for value, reference in zip(
                function(), references, strict=True))
            passes[op][name] = timer.median(function)
            warm[op][name] = ("sliding", tiles, {})
    for op, function in (("bn_depthwise", forward), ("bn_depthwise_input_grad", input_grad),
                         ("bn_depthwise_weight_grad", weight_grad)):
        passes[op][AGAIN] = timer.median(function)
    # Where a pass's default is cuDNN's form (`bn_depthwise.default_cudnn`, session 29), "default" is that form's
    # time, and the Triton kernel's default tiles are one more choice ("fwd/dx/dw triton"), recorded where they win.
    for op, name, function, outputs in (("bn_depthwise", "fwd triton", forward, slice(0, 3)),
                                        ("bn_depthwise_input_grad", "dx triton", input_grad, slice(3, 4)),
                                        ("bn_depthwise_weight_grad", "dw triton", weight_grad, slice(4, 5))):
        if op not in cudnn_functions or not bnd._by_default(op, k, stride, height):
            continue
        tiles = bnd._tiles(op, x, k, stride)
        result = function(tiles)
        if op == "bn_depthwise_weight_grad":
            result = (result[0].t().reshape(channels, 1, k, k),)
        errors[name] = max(relative_error(a_.float(), b_) for a_, b_ in zip(result, expected[outputs]))
        passes[op][name] = timer.median(partial(function, tiles))
        warm[op][name] = ("tiled", tiles, {})
        passes[op]["default"] = passes[op][name.replace("triton", "cudnn")]
        passes[op][AGAIN] = timer.median(cudnn_functions[op])
    key = dict(kernel_size=k, stride=stride, channels=channels, height=height, width=width)
    promoted = {}
    for op, op_times in passes.items():
        index = 1 if op == "bn_depthwise_weight_grad" else 0
        choices = {name: ("tiled", pair[index], {}) for name, pair in configs.items() if pair[index] is not None}
        choices.update(warm[op])
        promoted[op] = promote(args.tuning, op, key, choices, op_times, errors, bound, device)
    times["fused"] = sum(op_times["default"] for op_times in passes.values())
    times["fused best"] = sum(min(t for n, t in op_times.items() if n != AGAIN) for op_times in passes.values())
    element = x.element_size()
    size_in, size_out = args.batch * height * width * channels, y.numel()
    moved = element * (size_in * 3 + size_out + (3 * size_out + size_in) + (size_out + 2 * size_in))
    layer_noise = max(noise(op_times) for op_times in passes.values())
    compiled = f"{times['compiled'] * 1e6:9.1f}" if "compiled" in times else f"{'-':>9}"
    note = outcome(skipped, promoted)
    print(f"{channels:5} {height:4} {k}x{k} s{stride} {count:2} | {times['torch'] * 1e6:9.1f} {compiled} "
          f"{times['cudnn'] * 1e6:9.1f} | " + " ".join(f"{op_times['default'] * 1e6:8.1f}" for op_times in
                                                       passes.values())
          + f" {moved / times['fused'] / 1e9:6.0f} | {times['fused best'] * 1e6:8.1f} "
          f"{times['dx from dy, y'] * 1e6:9.1f} {_cell(passes, 'bn_depthwise', 'fwd cudnn')} "
          f"{_cell(passes, 'bn_depthwise_input_grad', 'dx cudnn')} "
          f"{_cell(passes, 'bn_depthwise_weight_grad', 'dw cudnn')} "
          f"{_cell(passes, 'bn_depthwise', 'fwd banded')} {_cell(passes, 'bn_depthwise_input_grad', 'dx banded')} "
          f"{_cell(passes, 'bn_depthwise_weight_grad', 'dw banded')} "
          f"{_cell(passes, 'bn_depthwise', 'fwd sliding')} {_cell(passes, 'bn_depthwise_input_grad', 'dx sliding')} "
          f"{_cell(passes, 'bn_depthwise', 'fwd sliding ahead')} "
          f"{_cell(passes, 'bn_depthwise_input_grad', 'dx sliding ahead')} "
          f"(max error {max(errors.values()):.1e}, noise {layer_noise:.0%}{note})", flush=True)
    return {"channels": channels, "height": height, "width": width, "kernel": k, "stride": stride, "layers": count,
            "bytes": moved, "seconds": times, "pass_seconds": passes, "errors": errors, "noise": layer_noise,
            "skipped": skipped, "tuned": promoted}


def _cell(passes: dict, op: str, name: str) -> str:
    """A pass's time in microseconds for the printed line, '-' where it was not timed."""
    return f"{passes[op][name] * 1e6:9.1f}" if name in passes[op] else f"{'-':>9}"


def _conv_step(x, weight, stride, same, dy):
    inputs = [x.detach().requires_grad_(), weight.detach().requires_grad_()]
    padded = ops.pad_for_conv(inputs[0], weight.shape[-1], stride, same)
    return torch.autograd.grad(F.conv2d(padded, inputs[1], stride=stride, groups=x.shape[1]), inputs, dy)


def main() -> int:
    parser = sweep_parser(__doc__, "bn_depthwise_sweep.json", len(SWEEP), "how many sweep configurations to try")
    parser.set_defaults(batch=128)
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled PyTorch step")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = sweep_dtype(device)
    tuning.use(None)  # "default" means the Triton kernels' own tiles, whatever $EFFNET_TUNING names
    timer = sweep_timer(device)
    bound = 2e-2 if dtype == torch.bfloat16 else 1e-4
    # One compiled function for every shape (dynamic), so the sweep compiles a handful of graphs, not one per layer.
    compiled = None if args.no_compile or device.type != "cuda" else torch.compile(bnd.bn_depthwise_reference,
                                                                                    dynamic=True)
    print(f"{'ch':>5} {'H':>4} {'k':>3} {'s':>2} {'n':>2} | {'torch us':>9} {'compiled':>9} {'cudnn us':>9} | "
          f"{'fwd us':>8} {'dx us':>8} {'dw us':>8} {'GB/s':>6} | {'best us':>8} {'dx dy,y':>9} {'fwd cudnn':>9} "
          f"{'dx cudnn':>9} {'dw cudnn':>9} {'fwd band':>9} {'dx band':>9} {'dw band':>9} {'fwd slide':>9} "
          f"{'dx slide':>9} {'fwd ahead':>9} {'dx ahead':>9}", flush=True)
    rows, totals = sweep_layers(layer_shapes(args.model, args.size), args.layers, lambda shape, count: sweep_layer(
        args, shape, count, timer, device, dtype, bound, compiled))
    print_step_totals(totals, args.batch, "all depthwise layers")
    return finish(args.out, "bn_depthwise_sweep.json", device, rows, bound)


if __name__ == "__main__":
    sys.exit(main())
