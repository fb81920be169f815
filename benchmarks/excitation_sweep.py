"""The squeeze-excitation gate, shape by shape: its one-launch kernel against the split form and PyTorch.

    PYTHONPATH=src python benchmarks/excitation_sweep.py --out results/                   # on a GPU, seconds
    PYTHONPATH=src python benchmarks/excitation_sweep.py --model efficientnet_b4 --batch 128
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/excitation_sweep.py --device cpu --batch 2

For every distinct SE of a model's MBConv blocks (channels, hidden width; B0 by default) at the batch given, from
float32 channel sums to the float32 gate: PyTorch's four kernels (`ops.excitation`'s reference path), the
fused gate's default (`effnet.fast.excitation`: since run 9 the split form in chunks of 128 channels on a GPU for
320 channels or more at a batch of 128 or more), the one-launch kernel ("single": one program per 16 images walks
every channel) and the split form in each of a few channel chunks (`excitation_split`: one program per 16 images
and chunk, two launches). On a GPU the products take TF32, as the fused bf16 model runs them. Each is checked
against PyTorch and timed; with `--tuning FILE` a shape's winner is recorded (op `excitation`) where it beats the
default by 3% plus the noise. Run 8 (an H200): B0's 16 SEs took 14 us each at batch 256, B4's 32 took 34 us at
batch 128. Run 9: the split form faster on every SE of 336 channels or more (B4's 2,688-channel SE 84 -> 18.5 us).
"""
from __future__ import annotations

import sys
from collections import Counter
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.bench.measure import relative_error  # noqa: E402
from effnet.fast import excitation as fused  # noqa: E402
from effnet.models.blocks import MBConv  # noqa: E402
from sweep_common import (AGAIN, finish, noise, outcome, promote, sweep_parser, sweep_timer,  # noqa: E402
                          time_variants)

CHUNKS = [256, 128, 512]  # channels per program of the split form: its own default first, then the rule's (128)


def se_shapes(model_name: str) -> Counter:
    """(channels, hidden width) of each MBConv's squeeze-excitation -> how many blocks."""
    model = effnet.create_model(model_name)
    return Counter((m.se.conv_reduce.in_channels, m.se.conv_reduce.out_channels) for m in model.modules()
                   if isinstance(m, MBConv) and m.has_se)


def main() -> int:
    parser = sweep_parser(__doc__, "excitation_sweep.json", len(CHUNKS), "how many channel chunks of the split form")
    args = parser.parse_args()
    device = torch.device(args.device)
    timer = sweep_timer(device)
    tf32 = device.type in ("cuda", "meta")
    bound = 1e-2 if tf32 else 1e-4
    rows, totals = [], Counter()
    for index, ((channels, reduced), count) in enumerate(sorted(se_shapes(args.model).items())):
        if args.layers is not None and index not in args.layers:
            continue
        torch.manual_seed(index)
        sums = torch.randn(args.batch, channels, device=device) * 100
        weights = (torch.randn(reduced, channels, device=device) / channels ** 0.5, torch.randn(reduced, device=device),
                   torch.randn(channels, reduced, device=device) / reduced ** 0.5, torch.randn(channels, device=device))
        hidden = torch.nn.functional.silu(torch.addmm(weights[1], sums, weights[0].t(), alpha=1 / 100))
        expected = torch.sigmoid(torch.addmm(weights[3], hidden, weights[2].t()))
        choices = {"single": ("single", (), {}),
                   **{f"split {chunk}": ("split", (chunk,), {}) for chunk in CHUNKS[:args.configs]}}
        variants = {"default": lambda: fused.excitation(sums, 100, *weights, tf32=tf32),
                    "single": lambda: fused.excitation_single(sums, 100, *weights, tf32=tf32),
                    **{name: (lambda chunk=tiles[0]: fused.excitation_split(sums, 100, *weights, tf32=tf32,
                                                                            chunk=chunk))
                       for name, (kernel, tiles, _) in choices.items() if kernel == "split"}}
        times = {"torch": timer.median(lambda: torch.sigmoid(torch.addmm(weights[3], torch.nn.functional.silu(
            torch.addmm(weights[1], sums, weights[0].t(), alpha=1 / 100)), weights[2].t())))}
        errors, variant_times, skipped = time_variants(variants, partial(relative_error, reference=expected), timer)
        times.update(variant_times)
        times[AGAIN] = timer.median(variants["default"])
        key = dict(batch=args.batch, channels=channels, reduced=reduced)
        promoted = promote(args.tuning, "excitation", key, choices, times, errors, bound, device)
        best = min((name for name in times if name not in ("torch", AGAIN)), key=times.get)
        print(f"{index:2} {channels:5} -> {reduced:4} x{count:2} | torch {times['torch'] * 1e6:8.1f} us | default "
              f"{times['default'] * 1e6:8.1f} us | best {times[best] * 1e6:8.1f} us {best}  (max error "
              f"{max(errors.values()):.1e}, noise {noise(times):.0%}{outcome(skipped, promoted)})", flush=True)
        rows.append({"channels": channels, "reduced": reduced, "blocks": count, "seconds": times, "errors": errors,
                     "noise": noise(times), "skipped": skipped, "best": best, "tuned": promoted})
        for name in ("torch", "default"):
            totals[name] += count * times[name]
        totals["best"] += count * times[best]
    print(f"\nper forward of batch {args.batch}: torch {totals['torch'] * 1e3:.3f} ms, default "
          f"{totals['default'] * 1e3:.3f} ms, best per shape {totals['best'] * 1e3:.3f} ms")
    return finish(args.out, "excitation_sweep.json", device, rows, bound)


if __name__ == "__main__":
    sys.exit(main())
