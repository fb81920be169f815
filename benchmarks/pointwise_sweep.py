"""Where the fused 1x1 (pointwise) kernel stands against cuDNN and its memory floor, layer by layer.

    PYTHONPATH=src python benchmarks/pointwise_sweep.py --out results/          # on a GPU, ~2 minutes
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/pointwise_sweep.py --device cpu --batch 2 --size 32 \\
        --configs 1 --stream-configs 1

For every distinct 1x1 convolution of an MBConv block (B0 at 224 px by default: the expansions,
with SiLU, and the projections, with the squeeze-excitation gate and, where the block has one, the
residual) it times on channels-last activations: PyTorch as eager runs it (`x * gate`, conv, SiLU,
`+ residual`), the bare cuDNN convolution (no gate, activation or residual: a bound on what a
library matrix product gives), effnet's default for the layer (the streaming kernel below where
`streaming.default_for` says so, else the tiled kernel's tiles per role, the gate on the weight tile), the
tiled kernel with the gate applied to the activations as they load instead ("gate-rows",
`gate_weights=False`), each tile configuration of a sweep with either gate, and on
the layers of up to `streaming.MAX_K` input channels the persistent, pipelined kernel of
`effnet.fast.streaming` in each of its sweep configurations ("stream (...)"; with a gate, those whose row
tiles fit in one image), the conv as one cuBLAS product with the gate, SiLU and residual in element-wise passes
around it (`effnet.fast.blas`, "cublas"), and the tuning file's own choice for the layer where the sweep does not
time it anyway ("recorded ...": a narrow sweep keeps a wider one's winner unless it beats it).
Bandwidth counts one read of the input and the residual and one write of the output.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import blas, kernels, ops, streaming  # noqa: E402
from effnet.models.blocks import MBConv  # noqa: E402
from sweep_common import (AGAIN, finish, noise, promote, sweep_dtype, sweep_parser, sweep_timer,  # noqa: E402
                          outcome, time_variants, with_recorded)

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). First the default tiles on 8 warps: on 4 they spill 344-408
# bytes of registers per thread on sm_90 (benchmarks/compile_check.py, Triton 3.8), on 8 they need 208-221.
SWEEP = [(128, 64, 64, 8, 3), (128, 64, 64, 4, 3), (64, 64, 64, 4, 3), (128, 128, 64, 8, 3), (256, 64, 64, 8, 3),
         (128, 32, 64, 4, 4), (64, 128, 64, 4, 3)]
# streaming.pointwise_streaming's (BLOCK_M, BLOCK_N, num_warps, num_stages, programs_per_sm): run 5's two best on
# B0's narrow expansions first, then a tile for narrow outputs (B4's 24 -> 24 projection), run 5's two-stage one (whose
# copies are all awaited at each step: compile_check.py) and a 256-row one.
STREAM_SWEEP = [(64, 128, 4, 3, 2), (128, 64, 4, 3, 4), (128, 32, 4, 3, 4), (128, 64, 4, 2, 2), (256, 64, 8, 3, 1)]


def layer_shapes(model_name: str, size: int) -> Counter:
    """(in, out, height, width, act, gate, residual) of each MBConv 1x1 conv -> how many layers."""
    model = effnet.create_model(model_name).eval()
    shapes: Counter = Counter()

    def recorder(act: bool, gate: bool, residual: bool):
        def record(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:
            _, channels, height, width = inputs[0].shape
            shapes[(channels, module.out_channels, height, width, act, gate, residual)] += 1
        return record

    hooks = []
    for block in model.modules():
        if isinstance(block, MBConv):
            if block.expands:
                hooks.append(block.conv_pw.register_forward_pre_hook(recorder(True, False, False)))
            hooks.append(block.conv_pwl.register_forward_pre_hook(recorder(False, block.has_se, block.has_skip)))
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return shapes


def sweep_layer(args: argparse.Namespace, shape: tuple, count: int, timer, device: torch.device, dtype: torch.dtype,
                bound: float) -> dict:
    """One 1x1 layer shape: PyTorch, bare cuDNN, the kernel's default and every variant, each checked and timed;
    prints the layer's line and returns its row (the winner recorded in the tuning file if it beats the default)."""
    cin, cout, height, width, act, gated, skip = shape
    torch.manual_seed(0)
    x = torch.randn(args.batch, cin, height, width, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    weight = (torch.randn(cout, cin, 1, 1, device=device, dtype=dtype) / cin ** 0.5)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(cout, device=device, dtype=dtype)
    gate = torch.rand(args.batch, cin, device=device) if gated else None
    residual = (torch.randn(args.batch, cout, height, width, device=device, dtype=dtype)
                .contiguous(memory_format=torch.channels_last) if skip else None)
    moved = (x.numel() + args.batch * cout * height * width * (2 if skip else 1)) * x.element_size()
    expected = ops.pointwise(x, weight, weight_t, bias, act=act, gate=gate, residual=residual,
                             use_triton=False)

    def run(tiles=None, gate_weights=True):  # the kernel's default: the gate on the weights
        return kernels.pointwise(x, weight_t, bias, act=act, gate=gate, residual=residual, tiles=tiles,
                                 gate_weights=gate_weights)

    def stream(tiles):
        return streaming.pointwise_streaming(x, weight_t, bias, act=act, gate=gate, residual=residual, tiles=tiles)

    times = {"torch": timer.median(lambda: ops.pointwise(x, weight, weight_t, bias, act=act, gate=gate,
                                                         residual=residual, use_triton=False)),
             "cudnn": timer.median(lambda: F.conv2d(x, weight))}
    # name -> (kernel, tiles, extra) for the tuning file; "gate-rows" keeps the default tiles.
    sweep = SWEEP[:args.configs]
    choices = {str(t): ("tiled", t, {"gate_weights": False}) for t in sweep}
    if gated:
        choices.update({f"{t} gate-w": ("tiled", t, {"gate_weights": True}) for t in sweep})
    if cin <= streaming.MAX_K:  # gated: in row tiles of at most one image
        choices.update({f"stream {t}": ("streaming", t, {}) for t in STREAM_SWEEP[:args.stream_configs]
                        if not gated or t[0] <= height * width})
    if args.cublas:
        choices["cublas"] = ("cublas", (), {})
    key = dict(in_channels=cin, out_channels=cout, height=height, width=width, gated=gated, residual=skip)
    choices = with_recorded(args.tuning, "pointwise", key, choices)
    layer = dict(act=act, gate=gate, residual=residual)
    runners = {"tiled": lambda tiles, extra: partial(run, tiles, extra.get("gate_weights", True)),
               "streaming": lambda tiles, extra: partial(stream, tiles),
               "cublas": lambda tiles, extra: partial(blas.pointwise_blas, x, weight_t, bias, **layer)}
    variants = {"default": partial(ops.default_pointwise, x, weight_t, bias, **layer),
                **({"gate-rows": partial(run, None, False)} if gated else {}),
                **{name: runners[kernel](tiles, extra) for name, (kernel, tiles, extra) in choices.items()}}
    # skipped: e.g. a deep pipeline of streaming tiles 256 channels wide, out of shared memory
    errors, variant_times, skipped = time_variants(variants, partial(relative_error, reference=expected), timer)
    times.update(variant_times)
    times[AGAIN] = timer.median(variants["default"])
    swept = {name: t for name, t in times.items() if name not in ("torch", "cudnn", AGAIN)}
    best = min(swept, key=swept.get)
    promoted = promote(args.tuning, "pointwise", key, choices, times, errors, bound, device)

    def rate(seconds: float) -> float:
        return moved / seconds / 1e9

    role = "expand" if act else ("proj+res" if skip else "project")
    gate_rows = f"{times['gate-rows'] * 1e6:9.1f}" if gated else f"{'-':>9}"
    note = outcome(skipped, promoted)
    print(f"{cin:5} {cout:4} {height:4} {role:>8} {count:2} | {times['torch'] * 1e6:9.1f} "
          f"{times['cudnn'] * 1e6:9.1f} | {times['default'] * 1e6:10.1f} {rate(times['default']):6.0f} | "
          f"{gate_rows} | {swept[best] * 1e6:8.1f} {rate(swept[best]):6.0f} {best}  "
          f"(max error {max(errors.values()):.1e}, noise {noise(times):.0%}{note})", flush=True)
    return {"in": cin, "out": cout, "height": height, "width": width, "role": role, "layers": count,
            "bytes": moved, "seconds": times, "errors": errors, "noise": noise(times), "skipped": skipped, "best": best,
            "tuned": promoted}


def main() -> int:
    parser = sweep_parser(__doc__, "pointwise_sweep.json", len(SWEEP), "how many sweep configurations to try")
    parser.add_argument("--stream-configs", type=int, default=len(STREAM_SWEEP),
                        help="how many streaming-kernel configurations to try per layer")
    parser.add_argument("--no-cublas", dest="cublas", action="store_false",
                        help="leave out the conv as one cuBLAS product (effnet.fast.blas)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = sweep_dtype(device)
    timer = sweep_timer(device)
    bound = 2e-2 if dtype == torch.bfloat16 else 1e-4
    rows, totals = [], Counter()
    print(f"{'in':>5} {'out':>4} {'H':>4} {'role':>8} {'n':>2} | {'torch us':>9} {'cudnn us':>9} | "
          f"{'default us':>10} {'GB/s':>6} | {'gate-rows':>9} | {'best us':>8} {'GB/s':>6} best", flush=True)
    for index, (shape, count) in enumerate(sorted(layer_shapes(args.model, args.size).items())):
        if args.layers is not None and index not in args.layers:
            continue
        row = sweep_layer(args, shape, count, timer, device, dtype, bound)
        rows.append(row)
        times = row["seconds"]
        for name in ("torch", "cudnn", "default"):
            totals[name] += count * times[name]
        totals["best"] += count * times[row["best"]]
        totals["floor bytes"] += count * row["bytes"]
    print(f"\nper forward of batch {args.batch}: torch {totals['torch'] * 1e3:.2f} ms, bare cuDNN conv "
          f"{totals['cudnn'] * 1e3:.2f} ms, default tiles {totals['default'] * 1e3:.2f} ms, best per layer "
          f"{totals['best'] * 1e3:.2f} ms; {totals['floor bytes'] / 1e9:.2f} GB moved at the floor")
    return finish(args.out, "pointwise_sweep.json", device, rows, bound)


if __name__ == "__main__":
    sys.exit(main())
