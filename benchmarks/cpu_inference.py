"""CPU inference latency of effnet's EfficientNet-B0 against timm's, in one process.

Both models compute the same function (timm's weights are copied into ours and the outputs are
checked to 1e-5 first), run in fp32 eval mode under `torch.inference_mode`, on the same inputs and
thread count. The two are timed alternately within each repeat, so machine noise hits both.

    .venv/bin/python benchmarks/cpu_inference.py --batch-sizes 1 32 --repeats 100 20 --json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

import effnet

GOAL_RATIO = 1.0  # ours / timm median time: at most 1.0 means ours is not slower
PARITY_TOLERANCE = 1e-5

def build_pair(model_name: str) -> tuple[nn.Module, nn.Module]:
    """timm's model with randomised BN statistics, and ours carrying the same weights."""
    import timm

    torch.manual_seed(0)
    peer = timm.create_model(model_name).eval()
    # Non-trivial BN statistics so the parity check exercises every normalisation.
    for module in peer.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    ours = effnet.create_model(model_name).eval()
    ours.load_state_dict(effnet.convert_state_dict(peer.state_dict(), "timm"))
    return ours, peer


def check_parity(ours: nn.Module, peer: nn.Module, image_size: int) -> float:
    """Relative L2 error of our logits against timm's; raises if above the tolerance."""
    x = torch.randn(2, 3, image_size, image_size)
    with torch.inference_mode():
        expected = peer(x)
        error = ((ours(x) - expected).norm() / expected.norm()).item()
    if not error <= PARITY_TOLERANCE:
        raise RuntimeError(f"outputs differ: relative error {error:.3g} > {PARITY_TOLERANCE:g}")
    return error


def time_pair(ours: nn.Module, peer: nn.Module, batch_size: int, image_size: int, repeats: int,
              warmup: int) -> dict[str, list[float]]:
    """Seconds per forward for each model; the order alternates every repeat."""
    x = torch.randn(batch_size, 3, image_size, image_size)
    models = {"ours": ours, "timm": peer}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(x)
        for index in range(repeats):
            order = ("ours", "timm") if index % 2 == 0 else ("timm", "ours")
            for name in order:
                start = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], batch_size: int) -> dict[str, object]:
    """Median and best latency, throughput and the ours/timm ratio for one batch size."""
    result: dict[str, object] = {"batch_size": batch_size, "repeats": len(times["ours"])}
    for name, samples in times.items():
        median = statistics.median(samples)
        result[name] = {
            "median_ms": median * 1e3,
            "min_ms": min(samples) * 1e3,
            "images_per_second": batch_size / median,
        }
    result["ratio"] = statistics.median(times["ours"]) / statistics.median(times["timm"])
    # Each repeat timed both back to back: the median of those ratios is less exposed to load drift.
    result["paired_ratio"] = statistics.median(a / b for a, b in zip(times["ours"], times["timm"]))
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0", help="name known to both effnet and timm")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, nargs="+", default=[100, 20],
                        help="timed repeats per batch size (one value applies to all)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per model first")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both models)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout (the PASS/FAIL line goes to stderr)")
    args = parser.parse_args(argv)
    if len(args.repeats) not in (1, len(args.batch_sizes)):
        parser.error(f"--repeats: give 1 or {len(args.batch_sizes)} values, got {len(args.repeats)}")
    if min(args.repeats) < 1 or min(args.batch_sizes) < 1 or args.warmup < 0:
        parser.error("--repeats and --batch-sizes must be positive, --warmup not negative")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be positive, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    repeats = args.repeats * len(args.batch_sizes) if len(args.repeats) == 1 else args.repeats
    ours, peer = build_pair(args.model)
    error = check_parity(ours, peer, args.image_size)
    results = [summarise(time_pair(ours, peer, batch, args.image_size, count, args.warmup), batch)
               for batch, count in zip(args.batch_sizes, repeats)]
    passed = all(result["ratio"] <= GOAL_RATIO for result in results)
    report = {
        "model": args.model, "image_size": args.image_size, "dtype": "float32",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "parity_relative_error": error,
        "goal_ratio": GOAL_RATIO, "results": results, "passed": passed,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"{args.model} {args.image_size}x{args.image_size} fp32, {report['threads']} threads, "
              f"torch {torch.__version__}, parity rel. error {error:.2g}")
        print(f"{'batch':>5} {'reps':>4} {'ours ms':>9} {'timm ms':>9} {'ours img/s':>10} "
              f"{'timm img/s':>10} {'ratio':>6} {'paired':>6}")
        for r in results:
            print(f"{r['batch_size']:>5} {r['repeats']:>4} {r['ours']['median_ms']:>9.2f} "
                  f"{r['timm']['median_ms']:>9.2f} {r['ours']['images_per_second']:>10.1f} "
                  f"{r['timm']['images_per_second']:>10.1f} {r['ratio']:>6.3f} {r['paired_ratio']:>6.3f}")
    print(f"{'PASS' if passed else 'FAIL'}: median ratio ours/timm <= {GOAL_RATIO} at every batch size",
          file=sys.stderr if args.json else sys.stdout)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
