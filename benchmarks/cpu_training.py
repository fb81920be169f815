"""CPU training throughput of effnet's EfficientNet-B0 against timm's, in one process.

Both models start from the same weights (timm's, converted), train with the same dropout (0.2),
stochastic depth (0.2), SGD step, batch and resolution, fp32, on the same thread count; one
training step (forward, backward, optimizer step) of each alternates every repeat, so machine
noise hits both. Ours must not be slower (ratio of median step times <= 1.0).

    .venv/bin/python benchmarks/cpu_training.py --batch-size 32 --image-size 224 --repeats 10
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

import effnet

GOAL_RATIO = 1.0


def build_pair(model_name: str, drop_rate: float, drop_path_rate: float) -> dict[str, nn.Module]:
    import timm

    torch.manual_seed(0)
    peer = timm.create_model(model_name, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    ours = effnet.create_model(model_name, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    ours.load_state_dict(effnet.convert_state_dict(peer.state_dict(), "timm"))
    return {"ours": ours.train(), "timm": peer.train()}


def time_training(models: dict[str, nn.Module], batch_size: int, image_size: int, repeats: int,
                  warmup: int) -> dict[str, list[float]]:
    images = torch.randn(batch_size, 3, image_size, image_size)
    targets = torch.randint(0, 1000, (batch_size,))
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) for name, model in models.items()}

    def step(name: str) -> None:
        loss = nn.functional.cross_entropy(models[name](images), targets)
        optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[name].step()

    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(warmup):
        for name in models:
            step(name)
    for index in range(repeats):
        for name in (("ours", "timm") if index % 2 == 0 else ("timm", "ours")):
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    return times


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0", help="name known to both effnet and timm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both models)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.image_size, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch-size, --image-size and --repeats must be positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    times = time_training(build_pair(args.model, 0.2, 0.2), args.batch_size, args.image_size, args.repeats,
                          args.warmup)
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    report = {
        "model": args.model, "batch_size": args.batch_size, "image_size": args.image_size, "dtype": "float32",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": args.repeats,
        "images_per_second": {name: args.batch_size / median for name, median in medians.items()},
        "median_step_ms": {name: median * 1e3 for name, median in medians.items()},
        "ratio": medians["ours"] / medians["timm"],
        "paired_ratio": statistics.median(a / b for a, b in zip(times["ours"], times["timm"])),
    }
    report["passed"] = report["ratio"] <= GOAL_RATIO
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        rate = report["images_per_second"]
        print(f"{args.model} training, batch {args.batch_size}, {args.image_size}px fp32, {report['threads']} threads: "
              f"ours {rate['ours']:.1f} img/s, timm {rate['timm']:.1f} img/s, ratio of median step times "
              f"{report['ratio']:.3f} (paired {report['paired_ratio']:.3f})")
    print(f"{'PASS' if report['passed'] else 'FAIL'}: ours/timm step time <= {GOAL_RATIO}",
          file=sys.stderr if args.json else sys.stdout)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
