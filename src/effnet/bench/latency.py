"""Median forward latency of a model built from a spec, on a given device and batch size."""
from __future__ import annotations

import statistics
import time

import torch

from effnet.bench.throughput import BenchError
from effnet.devices import resolve_device
from effnet.fast import BACKENDS
from effnet.spec.types import NetworkSpec


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latency_ms(spec: NetworkSpec, *, batch_size: int = 1, device: str = "cpu", repeats: int = 20,
                      warmup: int = 3, num_classes: int = 1000, backend: str = "torch") -> float:
    """Median milliseconds of one eval-mode forward at the spec's resolution: of the plain model, or with
    `backend="fast"` of `effnet.fast.optimize_for_device`'s (what `effnet predict --backend fast` runs)."""
    import effnet
    import effnet.fast

    if backend not in BACKENDS:
        raise BenchError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for name, value in (("batch_size", batch_size), ("repeats", repeats)):
        if value < 1:
            raise BenchError(f"{name} must be at least 1, got {value}")
    target = resolve_device(device)
    model = effnet.create_model(spec, num_classes=num_classes).eval().to(target)
    if backend == "fast":
        model = effnet.fast.optimize_for_device(model, target)
    images = torch.randn(batch_size, 3, spec.resolution, spec.resolution, device=target)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            _synchronize(target)
            start = time.perf_counter()
            model(images)
            _synchronize(target)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
