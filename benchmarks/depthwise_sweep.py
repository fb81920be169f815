"""Where the fused depthwise kernel stands against its memory floor, layer by layer.

    PYTHONPATH=src python benchmarks/depthwise_sweep.py --out results/          # on a GPU, ~1 minute
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/depthwise_sweep.py --device cpu --batch 2 --size 32 \
        --configs 2 --banded-configs 1

For every distinct depthwise layer of a model (B0 at 224 px by default) it times, on channels-last activations:
PyTorch (conv + SiLU + the SE mean, as eager runs them), effnet's kernel with its default tiles, the kernel with
each tile configuration of a small sweep (BLOCK_H, BLOCK_W, BLOCK_C, ROWS, warps) and, on stride-1 layers, the
tiled kernel with its taps in two phases, the first loading each tile's whole input halo (the default tiles,
then the sweep's; `--warm-configs`), the banded kernel (`effnet.fast.banded`: each kernel row a matrix
product on tensor cores; `--banded-configs`), cuDNN's conv with one pass for the SiLU and the pool
(`effnet.fast.depthwise_cudnn`, "cudnn"; `--no-cudnn` leaves it out) and the window sliding down the rows
(`effnet.fast.depthwise_sliding`: each input row loaded k times, not k² times; `--sliding-configs`). Each time is
printed with the bandwidth it implies (one read of the input, one write of the output) and every kernel result is
checked against PyTorch. The totals weight each layer shape by how often the network runs it, so the last lines
say what tiles alone could gain over the defaults, and how far the best tiles stay from the memory floor, before
any redesign.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import kernels, ops  # noqa: E402
from effnet.fast.banded import banded_depthwise  # noqa: E402
from effnet.fast.banded import default_tiles as banded_tiles  # noqa: E402
from effnet.fast.depthwise_cudnn import depthwise_cudnn  # noqa: E402
from effnet.fast.depthwise_sliding import default_tiles as sliding_tiles  # noqa: E402
from effnet.fast.depthwise_sliding import depthwise_sliding  # noqa: E402
from effnet.fast.depthwise_sliding import misfit as sliding_misfit  # noqa: E402
from effnet.models.layers import SameConv2d  # noqa: E402
from sweep_common import (AGAIN, finish, noise, promote, sweep_dtype, sweep_parser, sweep_timer,  # noqa: E402
                          outcome, time_variants, with_recorded)

# (BLOCK_H, BLOCK_W, BLOCK_C, ROWS, num_warps): first the four that won a layer in run 3 (benchmarks/RESULTS.md),
# so `--configs 4` is a short sweep, then more one-row and two-dimensional tiles of 32 to 128 pixels.
SWEEP = [(8, 8, 32, 1, 4), (1, 16, 64, 1, 4), (4, 16, 32, 1, 4), (4, 8, 64, 1, 4),
         (1, 8, 128, 1, 4), (1, 16, 64, 4, 4), (1, 32, 64, 2, 8), (4, 8, 64, 2, 4), (2, 16, 64, 1, 8),
         (8, 8, 64, 1, 8), (4, 4, 128, 1, 4), (8, 16, 32, 2, 8)]
# (BLOCK_R, BLOCK_C, num_warps) of `effnet.fast.banded` beside its default, at the default tile width (16 or 32):
# none spills on sm_90 under Triton 3.6 (`compile_check.py --sweeps`): more rows a program (the tables' loads
# spread over more outputs, twice the registers), more channels, fewer warps.
BANDED = [(64, 8, 8), (32, 16, 8), (64, 4, 4)]


def banded_configs(width: int, kernel_size: int, stride: int, count: int) -> list[tuple[int, int, int, int]]:
    """The banded kernel's default tiles for a layer, at stride 1 the same in the other tile width (16 or 32: a
    14-pixel map's 5 x 5 conv fills half a 32-column tile, or two 16-column tiles of 12 whole outputs), then
    `BANDED` at the default width: `count` in all."""
    default = banded_tiles(width, kernel_size, stride)
    other = [(48 - default[0], *default[1:])] if stride == 1 else []
    return list(dict.fromkeys([default, *other, *((default[0], *tiles) for tiles in BANDED)]))[:count]


def sliding_configs(channels: int, size: int, count: int) -> list[tuple[int, ...]]:
    """The sliding kernel's default tiles for a layer's size x size output (4 values of a tile per thread), then:
    each input row loaded a step ahead of its products (a fifth value of 1), that with 2 values per thread (twice
    the warps: fewer registers, more warps resident), bands of 8 and of 32 rows (more programs; less warm-up), each
    band at most the map's height: `count` distinct ones at most."""
    block_w, block_c, rows, warps = sliding_tiles(channels, size, size)
    others = [(block_w, block_c, rows, warps, 1), (block_w, block_c, rows, min(2 * warps, 16), 1),
              *((block_w, block_c, min(band, size), warps) for band in (8, 32))]
    return list(dict.fromkeys([(block_w, block_c, rows, warps), *others]))[:count]


def layer_shapes(model_name: str, size: int) -> Counter:
    """(channels, height, width, kernel, stride, same) of each depthwise conv's input -> how many layers."""
    model = effnet.create_model(model_name).eval()
    shapes: Counter = Counter()

    def record(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:
        _, channels, height, width = inputs[0].shape
        shapes[(channels, height, width, module.kernel_size[0], module.stride[0], isinstance(module, SameConv2d))] += 1

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels and m.groups > 1]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return shapes


def layer_inputs(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """For each layer shape `--layers` picks (all by default), in index order: (index, (channels, height,
    width, kernel, stride, same), how many layers, a random channels-last input, a random (C, 1, k, k) weight)."""
    for index, (shape, count) in enumerate(sorted(layer_shapes(args.model, args.size).items())):
        if args.layers is not None and index not in args.layers:
            continue
        channels, height, width, k, _, _ = shape
        torch.manual_seed(0)
        x = torch.randn(args.batch, channels, height, width, device=device, dtype=dtype)
        weight = torch.randn(channels, 1, k, k, device=device, dtype=dtype) / k
        yield index, shape, count, x.contiguous(memory_format=torch.channels_last), weight


def torch_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int,
                    same: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y, _ = ops.depthwise(x, weight, weight.flatten(1).t(), bias, stride=stride, same=same, pool=False,
                         use_triton=False)
    return y, y.mean((2, 3))  # what eager runs: conv, SiLU, then the SE's global average pool


def sweep_layer(args: argparse.Namespace, index: int, shape: tuple, count: int, x: torch.Tensor, weight: torch.Tensor,
                timer, bound: float) -> dict:
    """One depthwise layer shape: PyTorch, the kernel's default tiles and every variant (other tiles, the warmed
    taps at stride 1, the banded kernel), each checked and timed; prints the layer's line and returns its row (the
    winner recorded in the tuning file if it beats the default)."""
    channels, height, width, k, stride, same = shape
    device, dtype = x.device, x.dtype
    sweep = SWEEP[:args.configs]
    bias = torch.randn(channels, device=device, dtype=dtype)
    taps = weight.flatten(1).t().float().contiguous()  # as the fused model holds them (`fused._taps`): float32
    (out_h, out_w), padding = ops.conv_geometry(x, k, stride, same)
    moved = (x.numel() + args.batch * channels * out_h * out_w) * x.element_size()
    expected = torch_reference(x, weight, bias, stride, same)

    def run(tiles=None):
        return kernels.depthwise(x, taps, bias, kernel_size=k, stride=stride, padding=padding,
                                 output_size=(out_h, out_w), act=True, pool=True, tiles=tiles)

    def band(tiles):
        return banded_depthwise(x, taps, bias, kernel_size=k, stride=stride, padding=padding,
                                output_size=(out_h, out_w), act=True, pool=True, tiles=tiles)

    def slide(tiles):
        return depthwise_sliding(x, taps, bias, kernel_size=k, stride=stride, padding=padding,
                                 output_size=(out_h, out_w), act=True, pool=True, tiles=tiles)

    def cudnn(tiles):
        return depthwise_cudnn(x, taps, bias, kernel_size=k, stride=stride, padding=padding,
                               output_size=(out_h, out_w), act=True, pool=True)

    choices = {str(t): ("tiled", t, {}) for t in sweep}  # name -> (kernel, tiles, extra) for the tuning file
    if stride == 1:
        # the taps in two phases, the first loading each tile's whole input halo (`kernels._depthwise_taps`):
        # the default tiles, then the sweep's
        warm = [kernels._depthwise_tiles(channels), *SWEEP][:args.warm_configs]
        choices.update({f"warm {t}": ("tiled", (*t, 1), {}) for t in dict.fromkeys(warm)})
    # each kernel row a banded matrix product on tensor cores (`effnet.fast.banded`)
    choices.update({f"banded {t}": ("banded", t, {}) for t in banded_configs(out_w, k, stride, args.banded_configs)})
    if args.cudnn:  # the library's conv, then the SiLU and the pool in one pass (`effnet.fast.depthwise_cudnn`)
        choices["cudnn"] = ("cudnn", (), {})
    if sliding_misfit(k, stride, None) is None:  # each input row loaded k times (`effnet.fast.depthwise_sliding`)
        choices.update({f"sliding {t}": ("sliding", t, {}) for t in sliding_configs(channels, out_w,
                                                                                    args.sliding_configs)})
    key = dict(kernel_size=k, stride=stride, channels=channels, height=height, width=width)
    choices = with_recorded(args.tuning, "depthwise", key, choices)  # a wider sweep's winner, timed again
    runners = {"tiled": run, "banded": band, "cudnn": cudnn, "sliding": slide}
    variants = {"default": run, **{name: partial(runners[kernel], tiles)
                                   for name, (kernel, tiles, _) in choices.items()}}
    times = {"torch": timer.median(lambda: torch_reference(x, weight, bias, stride, same))}

    def error(output):
        y, sums = output
        return max(relative_error(y, expected[0]), relative_error(sums / (out_h * out_w), expected[1].float()))

    errors, variant_times, skipped = time_variants(variants, error, timer)
    times.update(variant_times)
    times[AGAIN] = timer.median(run)
    swept = {name: t for name, t in times.items() if name not in ("torch", AGAIN)}
    best = min(swept, key=swept.get)
    promoted = promote(args.tuning, "depthwise", key, choices, times, errors, bound, device)

    def rate(seconds: float) -> float:
        return moved / seconds / 1e9

    note = outcome(skipped, promoted)
    print(f"{index:2} {channels:5} {height:4} {k:2} {stride:2} {count:2}"
          f" | {times['torch'] * 1e6:9.1f} {rate(times['torch']):6.0f}"
          f" | {times['default'] * 1e6:10.1f} {rate(times['default']):6.0f} | {swept[best] * 1e6:8.1f}"
          f" {rate(swept[best]):6.0f} {best}  (max error {max(errors.values()):.1e}, noise {noise(times):.0%}{note})",
          flush=True)
    return {"channels": channels, "height": height, "width": width, "kernel": k, "stride": stride,
            "layers": count, "bytes": moved, "seconds": times, "errors": errors, "noise": noise(times),
            "skipped": skipped, "best": best, "tuned": promoted}


def main() -> int:
    parser = sweep_parser(__doc__, "depthwise_sweep.json", len(SWEEP), "how many sweep configurations to try")
    parser.add_argument("--warm-configs", type=int, default=2,
                        help="how many tile sets to try with the warmed taps (stride-1 layers): the default tiles, "
                             "then the sweep's")
    parser.add_argument("--banded-configs", type=int, default=2,
                        help="how many configurations of the banded kernel (tensor cores) to try: its default tiles, "
                             "then others")
    parser.add_argument("--sliding-configs", type=int, default=4,
                        help="how many tile sets of the sliding kernel to try: its default tiles, then others")
    parser.add_argument("--no-cudnn", dest="cudnn", action="store_false",
                        help="leave out cuDNN's conv with one pass for the SiLU and the pool")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = sweep_dtype(device)
    timer = sweep_timer(device)
    bound = 1e-2 if dtype == torch.bfloat16 else 1e-4
    rows, totals = [], Counter()
    print(f"{'#':>2} {'C':>5} {'H':>4} {'k':>2} {'s':>2} {'n':>2} | {'torch us':>9} {'GB/s':>6}"
          f" | {'default us':>10} {'GB/s':>6} | {'best us':>8} {'GB/s':>6} best tiles", flush=True)
    for index, shape, count, x, weight in layer_inputs(args, device, dtype):
        row = sweep_layer(args, index, shape, count, x, weight, timer, bound)
        rows.append(row)
        for name in ("torch", "default"):
            totals[name] += count * row["seconds"][name]
        totals["best tiles"] += count * row["seconds"][row["best"]]
        totals["floor bytes"] += count * row["bytes"]
    print(f"\nper forward of batch {args.batch}: torch {totals['torch'] * 1e3:.2f} ms, default tiles "
          f"{totals['default'] * 1e3:.2f} ms, best tiles per layer {totals['best tiles'] * 1e3:.2f} ms; "
          f"{totals['floor bytes'] / 1e9:.2f} GB moved at the floor")
    return finish(args.out, "depthwise_sweep.json", device, rows, bound)


if __name__ == "__main__":
    sys.exit(main())
