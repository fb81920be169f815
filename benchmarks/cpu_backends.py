"""CPU inference of effnet's B0 in eager PyTorch, torch.compile and onnxruntime, against timm eager.

All contenders compute the same function: timm's weights (with randomised BatchNorm statistics)
are converted into ours, and every contender's logits are checked against timm's to 1e-4 first.
Batch 1 latency and batch 32 throughput, fp32, `torch.inference_mode`, the same thread count for
torch and onnxruntime. Within each repeat the contenders run back to back in a rotating order, so
machine noise hits all of them; the report gives medians and timm-median / contender-median.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cpu_backends.py --threads 1 --json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from effnet.export import export_model, fold_batchnorm, relative_error
from effnet.inference.backends import OnnxRuntimeSession

from cpu_inference import build_pair  # the same timm pair, from the sibling script

GOAL_SPEEDUP = 1.5  # the fastest effnet backend against timm eager, at batch 1
PARITY_TOLERANCE = 1e-4
Runner = Callable[[torch.Tensor], torch.Tensor]


def onnxruntime_runner(model: nn.Module, image_size: int, threads: int, dynamo: bool,
                       optimization_level: str) -> Runner:
    """Export (dynamic batch, static H/W, parity-checked) and load into onnxruntime."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_model(model, "onnx", path, image_sizes=[image_size], dynamic_hw=False, dynamo=dynamo)
        session = OnnxRuntimeSession(path.read_bytes(), intra_op_threads=threads,
                                     optimization_level=optimization_level)
    return session.run


def build_contenders(args: argparse.Namespace) -> tuple[dict[str, Runner], dict[str, str]]:
    """name -> runner, and notes (a contender that could not be built says why)."""
    ours, peer = build_pair(args.model)
    fast = fold_batchnorm(ours) if args.fold_batchnorm else ours
    contenders: dict[str, Runner] = {"timm_eager": peer, "effnet_eager": fast}
    notes: dict[str, str] = {}
    if args.compile:
        try:
            compiled = torch.compile(fast, dynamic=False)
            with torch.inference_mode():
                for batch in args.batch_sizes:  # compile every batch size before timing
                    compiled(torch.randn(batch, 3, args.image_size, args.image_size))
            contenders["effnet_compiled"] = compiled
        except Exception as error:  # inductor needs a working C++ toolchain; report, do not hide
            notes["effnet_compiled"] = f"torch.compile failed: {type(error).__name__}: {str(error)[:300]}"
    contenders["effnet_onnxruntime"] = onnxruntime_runner(fast, args.image_size, args.threads, args.dynamo,
                                                          args.ort_optimization)
    return contenders, notes


def check_parity(contenders: dict[str, Runner], image_size: int) -> dict[str, float]:
    x = torch.randn(2, 3, image_size, image_size)
    with torch.inference_mode():
        expected = contenders["timm_eager"](x)
        errors = {name: relative_error(run(x.clone()), expected) for name, run in contenders.items()}
    for name, error in errors.items():
        if not error <= PARITY_TOLERANCE:
            raise RuntimeError(f"{name} differs from timm: relative error {error:.3g} > {PARITY_TOLERANCE:g}")
    return errors


def time_contenders(contenders: dict[str, Runner], batch_size: int, image_size: int, repeats: int,
                    warmup: int) -> dict[str, list[float]]:
    """Seconds per forward per contender; the order rotates every repeat."""
    x = torch.randn(batch_size, 3, image_size, image_size)
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in contenders.values():
                run(x)
        for index in range(repeats):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                contenders[name](x)
                times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], batch_size: int) -> dict[str, object]:
    timm_median = statistics.median(times["timm_eager"])
    result: dict[str, object] = {"batch_size": batch_size, "repeats": len(times["timm_eager"])}
    for name, samples in times.items():
        median = statistics.median(samples)
        result[name] = {"median_ms": median * 1e3, "min_ms": min(samples) * 1e3,
                        "images_per_second": batch_size / median, "speedup_vs_timm": timm_median / median}
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0", help="name known to both effnet and timm")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, nargs="+", default=[60, 8], help="timed repeats per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="include torch.compile (inductor; slow to compile on a small CPU)")
    parser.add_argument("--dynamo", action=argparse.BooleanOptionalAction, default=True,
                        help="ONNX through the dynamo exporter (default) or the TorchScript-based one")
    parser.add_argument("--ort-optimization", default="all", choices=("disable", "basic", "extended", "all"))
    parser.add_argument("--fold-batchnorm", action="store_true", help="fold BN into conv in effnet's contenders")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    if len(args.repeats) not in (1, len(args.batch_sizes)):
        parser.error(f"--repeats: give 1 or {len(args.batch_sizes)} values")
    args.repeats = args.repeats * len(args.batch_sizes) if len(args.repeats) == 1 else args.repeats
    return args


def print_table(report: dict[str, object]) -> None:
    print(f"{report['model']} {report['image_size']}px fp32, {report['threads']} threads, torch {torch.__version__}")
    for result in report["results"]:
        print(f"batch {result['batch_size']} ({result['repeats']} repeats):")
        for name in report["contenders"]:
            row = result[name]
            print(f"  {name:<20} {row['median_ms']:>9.2f} ms  {row['images_per_second']:>8.1f} img/s  "
                  f"x{row['speedup_vs_timm']:.2f} vs timm")
    for name, note in report["notes"].items():
        print(f"note: {name}: {note}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    contenders, notes = build_contenders(args)
    errors = check_parity(contenders, args.image_size)
    results = [summarise(time_contenders(contenders, batch, args.image_size, count, args.warmup), batch)
               for batch, count in zip(args.batch_sizes, args.repeats)]
    batch_one = next((r for r in results if r["batch_size"] == 1), None)
    best = max((n for n in contenders if n != "timm_eager"), key=lambda n: batch_one[n]["speedup_vs_timm"]) \
        if batch_one else None
    passed = bool(batch_one) and batch_one[best]["speedup_vs_timm"] >= GOAL_SPEEDUP
    report = {
        "model": args.model, "image_size": args.image_size, "threads": args.threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "fold_batchnorm": args.fold_batchnorm,
        "onnx_exporter": "dynamo" if args.dynamo else "torchscript", "ort_optimization": args.ort_optimization,
        "contenders": list(contenders), "notes": notes, "parity_relative_error": errors, "results": results,
        "goal": f"fastest effnet backend >= {GOAL_SPEEDUP}x timm eager at batch 1", "fastest": best,
        "passed": passed,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_table(report)
    print(f"{'PASS' if passed else 'FAIL'}: {report['goal']} (fastest: {best})",
          file=sys.stderr if args.json else sys.stdout)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
