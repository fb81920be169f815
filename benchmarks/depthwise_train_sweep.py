"""Where the training depthwise conv's backward kernels stand against PyTorch's, layer by layer.

    PYTHONPATH=src python benchmarks/depthwise_train_sweep.py --out results/ --tuning results/tuning.json  # GPU
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/depthwise_train_sweep.py --device cpu --batch 2 --size 32 \\
        --configs 1 --layers 0 3

For every distinct depthwise layer of a model (B0 at 224 px by default) it times, on channels-last
activations, PyTorch's depthwise backward as eager training runs it (`aten.convolution_backward`
for both gradients, and for the input and the weight gradient alone) and the two Triton kernels of
`effnet.fast.depthwise_train`: `input_grad` and `weight_grad`, each with its default and with each
configuration of a small sweep. (`input_grad`'s default on stride-1 layers is the inference kernel run
on dy with flipped taps; its sweep configurations are the dedicated gradient kernel's tiles.) Every kernel
result is checked against PyTorch's. The totals weight each layer shape by how often the network runs it:
what one backward pass through the network's depthwise convs costs in PyTorch, with the default tiles and
with the best tiles per layer.
`--tuning FILE` records, per layer, the best tiles of each kernel where they beat its default by 3%.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import torch
from triton.runtime.errors import OutOfResources

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from depthwise_sweep import layer_inputs  # noqa: E402
from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import ops, tuning  # noqa: E402
from effnet.fast.depthwise_train import input_grad, weight_grad  # noqa: E402
from sweep_common import AGAIN, finish, outcome, promote, sweep_parser, sweep_timer  # noqa: E402

# input_grad's (BLOCK_H, BLOCK_W, BLOCK_C, num_warps[, parity]); the default is (8, 8, 32, 4) on a GPU. Parity
# configurations (one parity of input pixels per program) run on stride-2 layers only.
INPUT_SWEEP = [(4, 8, 64, 4), (4, 8, 32, 4, 1), (8, 16, 32, 8), (8, 8, 32, 4, 1), (4, 16, 64, 8), (16, 8, 32, 8),
               (8, 8, 64, 8), (2, 16, 64, 4), (4, 4, 128, 4), (4, 8, 32, 4)]
# weight_grad's (BAND, BLOCK_H, BLOCK_W, BLOCK_C, num_warps[, tap_major]), BAND a multiple of BLOCK_H; the
# default is (8, 2, 16, 32, 4) on a GPU. Longer bands mean fewer programs and atomic adds, shorter ones more
# parallelism; tap-major walks the band once per tap with no per-tile reductions.
WEIGHT_SWEEP = [(8, 2, 16, 64, 4), (8, 2, 16, 32, 4, 1), (16, 4, 16, 32, 4), (16, 4, 8, 32, 4, 1), (8, 4, 8, 64, 4),
                (32, 4, 16, 32, 8), (32, 4, 16, 32, 8, 1), (16, 2, 32, 32, 8), (4, 4, 8, 32, 4), (16, 4, 8, 64, 8),
                (32, 8, 8, 32, 8)]


def sweep_layer(args: argparse.Namespace, index: int, shape: tuple, count: int, x: torch.Tensor, weight: torch.Tensor,
                timer, bound: float) -> dict:
    """One depthwise layer shape: PyTorch's backward and each gradient kernel's default and variants, each
    checked and timed; prints the layer's line and returns its row (winners recorded in the tuning file)."""
    channels, height, width, k, stride, same = shape
    device, dtype = x.device, x.dtype
    weight = weight.contiguous(memory_format=torch.channels_last)  # as a channels-last model holds it
    taps = weight.flatten(1).t().contiguous()
    (out_h, out_w), padding = ops.conv_geometry(x, k, stride, same)
    dy = torch.randn(args.batch, channels, out_h, out_w, device=device, dtype=dtype)
    dy = dy.contiguous(memory_format=torch.channels_last)
    # Eager pads a TF-"same" conv's input first (its backward only slices) and convolves unpadded.
    x_torch = ops.pad_for_conv(x, k, stride, same=True) if same else x
    torch_padding = [0, 0] if same else list(padding)

    def torch_backward(mask):
        return torch.ops.aten.convolution_backward(dy, x_torch, weight, None, [stride, stride], torch_padding,
                                                   [1, 1], False, [0, 0], channels, mask)

    expected_dx, expected_dw, _ = torch_backward([True, True, False])
    if same:
        expected_dx = expected_dx[:, :, padding[0]:padding[0] + height, padding[1]:padding[1] + width]
    times = {"torch": timer.median(partial(torch_backward, [True, True, False])),
             "torch dx": timer.median(partial(torch_backward, [True, False, False])),
             "torch dw": timer.median(partial(torch_backward, [False, True, False]))}
    geometry = dict(kernel_size=k, stride=stride, padding=padding)
    grads = {"dx": (partial(input_grad, dy, taps, (height, width), **geometry), expected_dx, INPUT_SWEEP,
                    "depthwise_input_grad"),
             "dw": (partial(weight_grad, x, dy, **geometry), expected_dw, WEIGHT_SWEEP, "depthwise_weight_grad")}
    key = dict(kernel_size=k, stride=stride, channels=channels, height=height, width=width)
    errors, skipped, best, tuned = {}, [], {}, {}
    for grad, (run, expected, sweep, op) in grads.items():
        # This kernel's variants by their own names ("default", "(8, 2, 16, 32, 4)"), for the tuning file.
        choices = {str(t): ("tiled", t, {}) for t in sweep[:args.configs]
                   if not (grad == "dx" and len(t) == 5 and stride != 2)}  # parity: stride 2 only
        own_times, own_errors = {}, {}
        for name, tiles in [("default", None), *((name, choice[1]) for name, choice in choices.items())]:
            try:
                own_errors[name] = relative_error(run(tiles=tiles), expected)
            except OutOfResources:
                skipped.append(f"{grad} {name}")
                continue
            own_times[name] = timer.median(partial(run, tiles=tiles))
        own_times[AGAIN] = timer.median(partial(run, tiles=None))
        best[grad] = f"{grad} {min((n for n in own_times if n != AGAIN), key=own_times.get)}"
        tuned[grad] = promote(args.tuning, op, key, choices, own_times, own_errors, bound, device)
        times.update({f"{grad} {name}": t for name, t in own_times.items()})
        errors.update({f"{grad} {name}": e for name, e in own_errors.items()})
    print(f"{index:2} {channels:5} {height:4} {k:2} {stride:2} {count:2} | {times['torch'] * 1e6:8.1f} "
          f"{times['torch dx'] * 1e6:7.1f} {times['torch dw'] * 1e6:7.1f} | "
          + " | ".join(f"{times[f'{grad} default'] * 1e6:7.1f} {times[best[grad]] * 1e6:7.1f} "
                       f"{best[grad][3:]:<20}" for grad in grads)
          + f" | {max(errors.values()):.1e}" + outcome(skipped, None),
          flush=True)
    return {"channels": channels, "height": height, "width": width, "kernel": k, "stride": stride, "same": same,
            "layers": count, "seconds": times, "errors": errors, "skipped": skipped, "best": best, "tuned": tuned}


def main() -> int:
    parser = sweep_parser(__doc__, "depthwise_train_sweep.json", max(len(INPUT_SWEEP), len(WEIGHT_SWEEP)),
                          "how many sweep configurations of each kernel to try")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    bound = 2e-2 if dtype == torch.bfloat16 else 1e-4
    tuning.use(None)  # "default" means the kernels' own tiles, whatever $EFFNET_TUNING names
    timer = sweep_timer(device)
    rows, totals = [], Counter()
    print(f"{'#':>2} {'C':>5} {'H':>4} {'k':>2} {'s':>2} {'n':>2} | {'torch us':>8} {'dx':>7} {'dw':>7} | "
          f"{'dx dflt':>7} {'best':>7} {'tiles':<20} | {'dw dflt':>7} {'best':>7} {'tiles':<20} | error", flush=True)
    for index, shape, count, x, weight in layer_inputs(args, device, dtype):
        row = sweep_layer(args, index, shape, count, x, weight, timer, bound)
        rows.append(row)
        times = row["seconds"]
        for name in ("torch", "torch dx", "torch dw", "dx default", "dw default"):
            totals[name] += count * times[name]
        for grad in ("dx", "dw"):
            totals[f"{grad} best"] += count * times[row["best"][grad]]

    def ms(dx: str, dw: str) -> str:
        return f"{(totals[dx] + totals[dw]) * 1e3:.2f} ms (dx {totals[dx] * 1e3:.2f}, dw {totals[dw] * 1e3:.2f})"

    print(f"\nper backward of batch {args.batch}: torch {totals['torch'] * 1e3:.2f} ms (dx alone "
          f"{totals['torch dx'] * 1e3:.2f}, dw alone {totals['torch dw'] * 1e3:.2f}), triton default tiles "
          f"{ms('dx default', 'dw default')}, best tiles per layer {ms('dx best', 'dw best')}")
    return finish(args.out, "depthwise_train_sweep.json", device, rows, bound)


if __name__ == "__main__":
    sys.exit(main())
