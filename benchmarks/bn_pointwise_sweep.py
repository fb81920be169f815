"""Where the training 1x1 conv with fused batch norms stands against PyTorch, layer by layer.

    PYTHONPATH=src python benchmarks/bn_pointwise_sweep.py --out results/        # on a GPU, ~2 minutes
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/bn_pointwise_sweep.py --device cpu --batch 1 \\
        --size 16 --configs 1 --layers 2

For every distinct 1x1 convolution of an MBConv block (B0 at 224 px, training batch 128 by default)
it times a training step of that layer, forward and backward, on channels-last activations:

- the fused pass with its default tiles, session 11's (`session11_tiles`) and each sweep configuration,
  forward, input gradient and weight gradient timed apart; the weight gradient's default tiles also split
  over fewer chunks of rows (`--wave-configs`: 1 and 2 programs per multiprocessor, not 4); for an expansion,
  also both gradients with the
  default tiles loading y, as they did before session 14 (now they recompute its tiles:
  `bn_pointwise._recompute`); and the three passes through the library's matrix products ("blas", unless
  `--no-blas`: `effnet.fast.bn_pointwise_blas` for an expansion, `effnet.fast.projection_blas` for a projection,
  each gradient timed with its own products g and da = g W, which a step's two gradients share: the row's
  "blas backward" times the layer's whole backward on the library form, the SE's included). An expansion is
  `bn_pointwise` (effnet.fast.bn_pointwise): it takes the block's input as it is and gathers its output's
  statistics.
  A projection is `se_projection` (effnet.fast.se_projection), as the fused training MBConv runs it:
  the squeeze-excitation's pool and MLP, then the 1x1 conv applying the depthwise output's batch norm,
  SiLU and the SE gate as it loads, gathering its own output's statistics (`bn_pointwise` with the
  normalisation alone in a block without SE).
- the same function in PyTorch (`bn_pointwise_reference`, `se_projection_reference`: affine map,
  SiLU, pool and SE, gate, `F.conv2d`, float32 batch statistics), eager ("torch") and, unless
  `--no-compile`, compiled by Inductor ("compiled": the element-wise work fused around cuDNN's
  convolution, as compiled timm trains).
- the bare convolution's forward and backward (cuDNN; a bound on what the library matrix products give).

The backward's inputs are dy and the gradients of y's batch mean and variance (what the next batch
norm hands back). Each row reports the fused passes' effective bandwidth, counting the bytes they must
move at the least: forward x (twice with an SE: its pool reads x first) + y; input gradient dy, y, x +
dx; weight gradient dy, y, x (an expansion's gradients, which read no y now, still counted so). With
`--tuning FILE` a configuration that beats the default by 3% plus the layer's noise is recorded for its
pass (`bn_pointwise`, `bn_pointwise_input_grad`, `bn_pointwise_weight_grad`).
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.runtime.errors import OutOfResources

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import bn_pointwise as bnp  # noqa: E402
from effnet.fast import bn_stats  # noqa: E402
from effnet.fast import se_projection as sep  # noqa: E402
from pointwise_sweep import layer_shapes  # noqa: E402
from sweep_common import (AGAIN, finish, noise, outcome, print_step_totals, promote, sweep_layers,  # noqa: E402
                          sweep_dtype, sweep_parser, sweep_timer)

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) per pass, tried beside bn_pointwise.default_tiles and
# session 11's defaults; configuration i of each pass makes variant i. None spills registers on sm_90 under
# Triton 3.6 or 3.8 (`compile_check.py --sweeps`). The input gradient's tile is (rows, BLOCK_K) of dx, looping
# over the outputs by BLOCK_N; the weight gradient's (BLOCK_N, BLOCK_K) of dweight, looping over the rows. The
# lease tries the first three of each: a small 4-warp tile (more programs resident per multiprocessor to
# hide latency), a tile of more rows or a wider K step (more bytes in flight per step), a deeper pipeline. Run 9
# timed the first three on B0's layers: the third never won a gradient, so session 27 made it a 32-row 4-warp
# tile. A projection's input gradient loops once over its narrow outputs, so nothing pipelines and its loads wait
# unless many programs are resident: 32 x 64 x 64 holds 96 registers and 20 warps a multiprocessor where run
# 9's winner, 64 x 64 x 64, holds 174 and 8 (`compile_check.py --sweeps`).
SWEEP = {"bn_pointwise": [(64, 64, 32, 4, 3), (128, 64, 64, 8, 3), (128, 128, 32, 8, 4), (64, 128, 32, 8, 3),
                          (128, 64, 32, 8, 2), (64, 64, 32, 4, 2)],
         "bn_pointwise_input_grad": [(64, 64, 64, 4, 3), (128, 32, 64, 8, 3), (32, 64, 64, 4, 3),
                                     (64, 32, 128, 8, 3), (32, 32, 256, 8, 3), (32, 128, 64, 8, 3)],
         "bn_pointwise_weight_grad": [(32, 64, 64, 4, 3), (64, 64, 64, 8, 3), (32, 32, 64, 4, 3),
                                      (16, 128, 64, 8, 3), (32, 64, 64, 8, 3), (32, 32, 128, 8, 3)]}
CONFIGS = len(SWEEP["bn_pointwise"])
WAVES = (1, 2)  # programs per multiprocessor for the weight gradient's split over the rows (the default: 4)


def session11_tiles(op: str, cin: int, cout: int, pixels: int) -> tuple[int, int, int, int, int]:
    """Session 11's defaults (never timed): today's tiles, the gradients with two pipeline stages. Triton's
    loop then waits for every copy at the top of each step (`cp.async.wait_group 0` in the PTX) and issues
    the next tile's after the step's products, so no load is in flight while a program computes."""
    block_m, block_n, block_k, warps, stages = bnp.default_tiles(op, cin, cout, pixels)
    return block_m, block_n, block_k, warps, (stages if op == "bn_pointwise" else 2)


def _inputs(args, shape, device, dtype):
    """The layer's tensors (x, weight; then scale and shift for a projection; then, for one with a
    squeeze-excitation, its reduce and expand weights and biases) and the backward's dy, dmean, dvar."""
    cin, cout, height, width, act, gated = shape
    normalized = not act  # the projection (its conv has no SiLU after it) reads a raw depthwise output
    torch.manual_seed(0)
    x = torch.randn(args.batch, cin, height, width, device=device).to(dtype).contiguous(
        memory_format=torch.channels_last)
    tensors = [x, (torch.randn(cout, cin, device=device) / cin ** 0.5).to(dtype)]
    if normalized:
        tensors += [torch.rand(cin, device=device) + 0.5, torch.randn(cin, device=device) * 0.3]
    if normalized and gated:
        reduced = max(1, cin // 24)  # an MBConv's SE: a quarter of the block's input, a sixth of cin
        tensors += [torch.randn(reduced, cin, device=device) / cin ** 0.5, torch.randn(reduced, device=device) * 0.1,
                    torch.randn(cin, reduced, device=device) / reduced ** 0.5, torch.randn(cin, device=device) * 0.1]
    dy = torch.randn(args.batch, cout, height, width, device=device).to(dtype).contiguous(
        memory_format=torch.channels_last)
    return tensors, normalized, dy, torch.randn(cout, device=device), torch.randn(cout, device=device)


def sweep_layer(args: argparse.Namespace, shape: tuple, count: int, timer, device: torch.device,
                dtype: torch.dtype, bound: float, compiled_references: dict | None) -> dict:
    """One 1x1 layer shape: the fused forward and backward with each configuration, and PyTorch's step,
    each checked and timed; prints the layer's line and returns its row."""
    cin, cout, height, width = shape[:4]
    tensors, normalized, dy, dmean, dvar = _inputs(args, shape, device, dtype)
    act = normalized  # the SiLU belongs to the input's batch norm
    se = len(tensors) > 4  # the model's gated projections run as se_projection
    reference = sep.se_projection_reference if se else partial(bnp.bn_pointwise_reference, act=act)

    def pytorch_step(function, precision=None):
        inputs = [t.detach().to(precision or t.dtype).requires_grad_() for t in tensors]
        y, mean, var = function(*inputs)
        upstream = [dy.to(precision or dy.dtype), dmean, dvar]
        return [y, mean, var, *torch.autograd.grad([y, mean, var], inputs, upstream)]

    # The yardstick in float32 from the same rounded inputs.
    expected = [t.float() for t in pytorch_step(reference, torch.float32)]

    def forward(tiles=None):
        if se:
            return sep._forward(*tensors, tiles=tiles)
        return bnp._forward(*tensors, *[None] * (4 - len(tensors)), None, act, tiles)

    outputs = forward()
    stats = bn_stats.gradient_stats(dmean, dvar, outputs[1], outputs[0])  # as the operator's autograd formula builds it
    x, y, weight = tensors[0], outputs[0], tensors[1]
    scale, shift = (tensors[2], tensors[3]) if normalized else (None, None)
    gate = outputs[4] if se else None
    # The SE pool's gradient that the projection's input gradient adds (its value does not change the time).
    pool = torch.zeros(args.batch, cin, device=device) if se else None

    def backward(tiles=None, weight_tiles=None, outputs=outputs):
        if se:  # (dx, dweight, daffine (dscale and dshift), and the SE's four)
            dx, dw, daffine, *dse = sep._backward(dy, stats, x, outputs[0], weight, scale, shift, *outputs[3:],
                                                  *tensors[4:7], True, tiles, weight_tiles)
            return dx, dw, *daffine, *dse
        dx, dw, daffine, _ = bnp._backward(dy, stats, x, outputs[0], weight, scale, shift, None, act, True, True,
                                           tiles, weight_tiles)
        return (dx, dw, *daffine)  # dscale and dshift for a projection

    def input_grad(tiles=None):
        return bnp._input_grad(dy, stats, x, y, weight, scale, shift, gate, act, pool=pool, tiles=tiles)

    def weight_grad(tiles=None):
        return bnp._weight_grad(dy, stats, x, y, weight, scale, shift, gate, act, tiles)

    def check(tiles) -> float:
        outputs = forward(tiles["bn_pointwise"])
        fused = [*outputs[:3], *backward(tiles["bn_pointwise_input_grad"], tiles["bn_pointwise_weight_grad"],
                                         outputs)]
        return max(relative_error(a.float(), b.float()) for a, b in zip(fused, expected, strict=True))

    times = {"torch": timer.median(partial(pytorch_step, reference)),
             "cudnn": timer.median(partial(_conv_step, *tensors[:2], dy))}
    if compiled_references is not None:  # one compiled function per kind of layer, for every shape (dynamic)
        compiled = compiled_references.setdefault((se, act), torch.compile(reference, dynamic=True))
        times["compiled"] = timer.median(partial(pytorch_step, compiled))
    functions = {"bn_pointwise": forward, "bn_pointwise_input_grad": input_grad,
                 "bn_pointwise_weight_grad": weight_grad}
    weight_tiles = bnp.default_tiles("bn_pointwise_weight_grad", cin, cout, height * width)
    configs = {"default": dict.fromkeys(functions),
               "session 11": {op: session11_tiles(op, cin, cout, height * width) for op in functions},
               **{f"#{i}": {op: SWEEP[op][i] for op in functions} for i in range(args.configs)},
               # the weight gradient's default tiles split over fewer chunks of rows: fewer partial sums written
               # and read back (benchmarks/partial_sums.py), fewer programs
               **{f"waves {w}": {**dict.fromkeys(functions), "bn_pointwise_weight_grad": (*weight_tiles, w)}
                  for w in WAVES[:args.wave_configs]},
               # the passes through the library's matrix products (`bn_pointwise_blas`, `projection_blas`)
               **({"blas": dict.fromkeys(functions, bnp.BLAS)} if bnp.library(scale, None, act) and not args.no_blas
                  else {})}
    errors, skipped = {}, []
    passes = {op: {} for op in functions}
    for name, tiles in configs.items():
        try:
            errors[name] = check(tiles)
        except OutOfResources:
            skipped.append(name)
            continue
        except RuntimeError as error:  # the library form, on a PyTorch or GPU it has not run on: noted, not fatal
            if name != "blas":
                raise
            print(f"  blas skipped: {str(error).splitlines()[0]}", flush=True)
            skipped.append(name)
            continue
        for op, function in functions.items():
            if tiles[op] is not None or name == "default":  # a configuration's other passes are the defaults
                passes[op][name] = timer.median(partial(function, tiles[op]))
    for op, function in functions.items():
        passes[op][AGAIN] = timer.median(function)
    if "blas" in passes["bn_pointwise"]:  # both gradients on the library form, sharing their products
        times["blas backward"] = timer.median(partial(backward, bnp.BLAS, bnp.BLAS))
    if not normalized:  # an expansion's gradients recompute y's tiles (`bn_pointwise._recompute`); as before, loading y
        times["dx loading y"] = timer.median(partial(bnp._input_grad, dy, stats, x, y, weight, scale, shift, gate, act,
                                                     pool=pool, load_y=True))
        times["dw loading y"] = timer.median(partial(bnp._weight_grad, dy, stats, x, y, weight, scale, shift, gate, act,
                                                     load_y=True))
    key = dict(in_channels=cin, out_channels=cout, height=height, width=width, normalized=normalized)
    promoted = {}
    for op, op_times in passes.items():
        choices = {name: ("blas", [], {}) if tiles[op] == bnp.BLAS else ("tiled", tiles[op], {})
                   for name, tiles in configs.items() if tiles[op] is not None}
        promoted[op] = promote(args.tuning, op, key, choices, op_times, errors, bound, device)
    best = {op: min((n for n in op_times if n != AGAIN), key=op_times.get) for op, op_times in passes.items()}
    times.update({"fused": sum(op_times["default"] for op_times in passes.values()),
                  **{f"fused {op.removeprefix('bn_pointwise').strip('_') or 'forward'}": op_times["default"]
                     for op, op_times in passes.items()},
                  "fused session 11": sum(op_times.get("session 11", float("nan")) for op_times in passes.values()),
                  "fused best": sum(passes[op][name] for op, name in best.items())})
    # Forward x (and again for the SE's pool) + y; input gradient dy, y, x + dx; weight gradient dy, y, x.
    moved = tensors[0].element_size() * args.batch * height * width * (cin * (1 + se) + cout + 2 * cout + 3 * cin
                                                                       + 2 * cout)
    layer_noise = max(noise(op_times) for op_times in passes.values())
    compiled = f"{times['compiled'] * 1e6:9.1f}" if "compiled" in times else f"{'-':>9}"
    note = outcome(skipped, promoted)
    if "dx loading y" in times:
        note += f"; loading y: dx {times['dx loading y'] * 1e6:.1f}, dw {times['dw loading y'] * 1e6:.1f} us"
    role = "project" if normalized else "expand"
    print(f"{cin:5} {cout:4} {height:4} {role:>8} {count:2} | {times['torch'] * 1e6:9.1f} {compiled} "
          f"{times['cudnn'] * 1e6:9.1f} | " + " ".join(f"{op_times['default'] * 1e6:8.1f}" for op_times in
                                                       passes.values())
          + f" {moved / times['fused'] / 1e9:6.0f} | {times['fused session 11'] * 1e6:8.1f} "
          f"{times['fused best'] * 1e6:8.1f} (max error {max(errors.values()):.1e}, noise {layer_noise:.0%}{note})",
          flush=True)
    return {"in": cin, "out": cout, "height": height, "width": width, "role": role, "layers": count, "bytes": moved,
            "seconds": times, "pass_seconds": passes, "errors": errors, "noise": layer_noise, "skipped": skipped,
            "best": best, "tuned": promoted}


def _conv_step(x, weight, dy):
    inputs = [x.detach().requires_grad_(), weight.detach()[:, :, None, None].requires_grad_()]
    return torch.autograd.grad(F.conv2d(*inputs), inputs, dy)


def main() -> int:
    parser = sweep_parser(__doc__, "bn_pointwise_sweep.json", CONFIGS, "how many sweep configurations to try")
    parser.set_defaults(batch=128)
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled PyTorch step")
    parser.add_argument("--no-blas", action="store_true",
                        help="leave out the passes through the library's matrix products")
    parser.add_argument("--wave-configs", type=int, default=len(WAVES),
                        help="how many splits of the weight gradient's rows over fewer programs to try (1 and 2 "
                             "programs per multiprocessor, against the default 4)")
    parser.add_argument("--role", choices=("expand", "project"),
                        help="only the expansions or only the projections (--layers then counts among those)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = sweep_dtype(device)
    timer = sweep_timer(device)
    bound = 2e-2 if dtype == torch.bfloat16 else 1e-4
    # Compiled functions by kind of layer, each for every shape (dynamic): a handful of graphs, not one per layer.
    compiled = None if args.no_compile or device.type != "cuda" else {}
    print(f"{'in':>5} {'out':>4} {'H':>4} {'role':>8} {'n':>2} | {'torch us':>9} {'compiled':>9} {'cudnn us':>9} | "
          f"{'fwd us':>8} {'dx us':>8} {'dw us':>8} {'GB/s':>6} | {'s11 us':>8} {'best us':>8}", flush=True)
    shapes: Counter = Counter()
    for shape, count in layer_shapes(args.model, args.size).items():
        if args.role is None or args.role == ("expand" if shape[4] else "project"):  # (act: a SiLU after the conv)
            shapes[shape[:6]] += count  # with or without the block's residual: the same layer here (added outside)
    rows, totals = sweep_layers(shapes, args.layers, lambda shape, count: sweep_layer(
        args, shape, count, timer, device, dtype, bound, compiled))
    print_step_totals(totals, args.batch, "all MBConv 1x1 layers")
    return finish(args.out, "bn_pointwise_sweep.json", device, rows, bound)


if __name__ == "__main__":
    sys.exit(main())
