"""Where the fused stem stands against PyTorch and its memory floor: the direct kernel against the tensor-core form.

    PYTHONPATH=src python benchmarks/stem_sweep.py --out results/                     # on a GPU, seconds
    PYTHONPATH=src python benchmarks/stem_sweep.py --model efficientnet_b4 --size 380 --batch 128
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/stem_sweep.py --device cpu --batch 2 --size 32

The model's stem (the input cast, its k x k conv, bias and SiLU; B0 at 224 px by default) on a float32 NCHW batch,
as a user passes it: PyTorch as the unfused fast model runs it (cast to channels-last, cuDNN's conv, SiLU), the
fused stem's default (`effnet.fast.stem`: since run 9 the product form for 16-bit weights on a GPU), the direct
kernel and the conv as one product of the gathered taps on the tensor cores in each of a few tile sets ("dot
(BLOCK_P, warps)"). Each is checked against PyTorch and timed; bandwidth counts one read of the input and one
write of the output. With `--tuning FILE` the winner is recorded for the stem's shape (op `stem`) where it beats
the default by 3% plus the noise. Run 8 (an H200): the direct kernel took 0.31 ms of B0's 5.9 ms forward at
batch 256 and 1.34 of B4's 28.0 at batch 128: 4-9x the time of one read of the float32 input and one write of
the output at the card's 4.3 TB/s. Run 9: the product form on 128 pixels and four warps 0.13 and 0.28 ms.
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import ops  # noqa: E402
from effnet.fast import stem as stem_module  # noqa: E402
from effnet.models.layers import SameConv2d  # noqa: E402
from sweep_common import (AGAIN, finish, noise, promote, sweep_dtype, sweep_parser, sweep_timer,  # noqa: E402
                          outcome, time_variants)

# (BLOCK_P, num_warps) of the tensor-core form: its default first.
SWEEP = [(128, 4), (64, 4), (256, 8), (128, 8)]


def main() -> int:
    parser = sweep_parser(__doc__, "stem_sweep.json", len(SWEEP), "how many tile sets of the tensor-core form")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = sweep_dtype(device)
    timer = sweep_timer(device)
    bound = 1e-2 if dtype == torch.bfloat16 else 1e-4
    conv = effnet.create_model(args.model).conv_stem
    k, stride, same = conv.kernel_size[0], conv.stride[0], isinstance(conv, SameConv2d)
    torch.manual_seed(0)
    x = torch.randn(args.batch, conv.in_channels, args.size, args.size, device=device)
    weight = torch.randn(conv.out_channels, conv.in_channels, k, k, device=device, dtype=dtype) / k
    weight_cols, bias = weight.flatten(1).t().contiguous(), torch.randn(conv.out_channels, device=device, dtype=dtype)
    output_size, padding = ops.conv_geometry(x, k, stride, same)
    expected = stem_module.stem(x, weight, weight_cols, bias, stride=stride, same=same, use_triton=False)
    y = torch.empty_like(expected)
    geometry = dict(stride=stride, padding=padding)

    def default():
        return stem_module._launch(x, weight_cols, bias, kernel_size=k, output_size=output_size, **geometry)

    def direct():
        return stem_module._launch_direct(x, weight_cols, bias, y, kernel_size=k, **geometry)

    def dot(tiles):
        return lambda: stem_module._launch_dot(x, weight_cols, bias, y, kernel_size=k, tiles=tiles, **geometry)

    choices = {"direct": ("direct", (), {}), **{f"dot {tiles}": ("dot", tiles, {}) for tiles in SWEEP[:args.configs]}}
    variants = {"default": default, "direct": direct,
                **{name: dot(tiles) for name, (kernel, tiles, _) in choices.items() if kernel == "dot"}}
    times = {"torch": timer.median(lambda: stem_module.stem(x, weight, weight_cols, bias, stride=stride, same=same,
                                                            use_triton=False))}
    errors, variant_times, skipped = time_variants(variants, partial(relative_error, reference=expected), timer)
    times.update(variant_times)
    times[AGAIN] = timer.median(default)
    key = dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=k, stride=stride,
               height=args.size, width=args.size)
    promoted = promote(args.tuning, "stem", key, choices, times, errors, bound, device)
    moved = x.numel() * x.element_size() + expected.numel() * expected.element_size()
    best = min((name for name in times if name not in ("torch", AGAIN)), key=times.get)
    print(f"{args.model} stem {conv.in_channels} -> {conv.out_channels}, {k}x{k} s{stride}, {args.size} px, batch "
          f"{args.batch}: floor {moved / 1e9:.2f} GB")
    for name, seconds in times.items():
        print(f"  {name:16} {seconds * 1e6:9.1f} us {moved / seconds / 1e9:7.0f} GB/s"
              f"{f'  (error {errors[name]:.1e})' if name in errors else ''}")
    note = outcome(skipped, promoted)
    print(f"  best {best} (noise {noise(times):.0%}){note}", flush=True)
    row = {"model": args.model, "key": key, "bytes": moved, "seconds": times, "errors": errors, "noise": noise(times),
           "skipped": skipped, "best": best, "tuned": promoted}
    return finish(args.out, "stem_sweep.json", device, [row], bound)


if __name__ == "__main__":
    sys.exit(main())
