"""Throughput, latency and peak memory of effnet models beside timm's and torchvision's, in one process.

Every candidate sees the same inputs, precision, memory format and batch; GPU work is timed with
CUDA events (CPU with `perf_counter`) after a warm-up, and each figure is the median of repeats.
Rows whose candidate cannot be built (a peer not installed, a mode not possible on the device) are
reported with the reason instead of a number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from effnet.bench import MODES, PRECISIONS, TASKS
from effnet.bench.candidates import build_candidates
from effnet.bench.measure import BenchRow, Timer, measure
from effnet.devices import resolve_device
from effnet.errors import EffnetError
from effnet.fast import tuning

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16)))  # by name, as PRECISIONS orders them


class BenchError(EffnetError, ValueError):
    """A benchmark setting that cannot be honoured (unknown task or mode, no such device)."""


@dataclass
class BenchConfig:
    model: str = "efficientnet_b0"
    device: str = "auto"  # auto: cuda when available
    batch_size: int | None = None  # default: 256 on GPU, 32 on CPU
    image_size: int | None = None  # default: the model's resolution
    precision: str = "auto"  # fp32 | bf16 | fp16; auto: bf16 on GPU, fp32 on CPU
    memory_format: str = "auto"  # channels_last | contiguous; auto: channels_last on GPU
    tasks: tuple[str, ...] = ("inference", "latency", "training")
    modes: tuple[str, ...] = ("eager",)
    libraries: tuple[str, ...] = ("effnet", "timm", "torchvision")
    fast: bool = True  # add effnet's fused inference path and memory saver rows
    memory_savers: tuple[str, ...] = ("activations",)  # one effnet-SAVER training row each
    fuse_expansion: bool = False  # add the experimental effnet-fast-expand inference row
    unfused_stem: bool = False  # add effnet-fast-unfused-stem: effnet-fast with the PyTorch stem
    triton_depthwise: bool = False  # add the experimental effnet-tdw training row
    fused_training: bool = False  # add the experimental effnet-ftrain training row
    warmup: int = 3
    repeats: int = 10
    iterations: int = 5  # timed iterations per repeat
    check_tolerance: float | None = None  # default: 1e-4 in fp32, 5e-2 in bf16/fp16 (autocast rounding)


@dataclass
class BenchResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[BenchRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "environment": self.environment, "rows": [asdict(r) for r in self.rows]}


def _check_counts(config: BenchConfig) -> None:
    """Sizes and counts the user gave: zero or negative is a mistake, never a request for the default."""
    for name, value, least in (("batch size", config.batch_size, 1), ("image size", config.image_size, 8),
                               ("warm-up", config.warmup, 0), ("repeats", config.repeats, 1),
                               ("iterations", config.iterations, 1)):
        if value is not None and value < least:
            raise BenchError(f"{name} must be at least {least}, got {value}")


def resolve_settings(config: BenchConfig) -> tuple[torch.device, int, torch.dtype, torch.memory_format]:
    _check_counts(config)
    device = resolve_device(config.device)
    gpu = device.type == "cuda"
    batch = config.batch_size if config.batch_size is not None else (256 if gpu else 32)
    precision = config.precision if config.precision != "auto" else ("bf16" if gpu else "fp32")
    if precision not in PRECISIONS:
        raise BenchError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    fmt = config.memory_format if config.memory_format != "auto" else ("channels_last" if gpu else "contiguous")
    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    if fmt not in formats:
        raise BenchError(f"memory format must be channels_last or contiguous, got {fmt!r}")
    return device, batch, DTYPES[precision], formats[fmt]


def environment(device: torch.device) -> dict[str, Any]:
    import platform

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    for name in ("timm", "torchvision", "triton"):
        try:
            env[name] = __import__(name).__version__
        except ImportError:
            env[name] = None
    source = tuning.source()
    if source:  # the per-layer kernel choices the fast rows ran with
        env["tuning"] = f"{source} ({len(tuning.active())} layer shapes)"
    return env


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = lambda line: None) -> BenchResult:
    """Measure every (task, mode, candidate) the config asks for; rows in that order."""
    for task in config.tasks:
        if task not in TASKS:
            raise BenchError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    for mode in config.modes:
        if mode not in MODES:
            raise BenchError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    device, batch, dtype, fmt = resolve_settings(config)
    settings = {**asdict(config), "device": str(device), "batch_size": batch,
                "precision": {v: k for k, v in DTYPES.items()}[dtype],
                "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous"}
    result = BenchResult(config=settings, environment=environment(device))
    candidates = build_candidates(config.model, config.libraries, fast=config.fast,
                                  memory_savers=config.memory_savers, fuse_expansion=config.fuse_expansion,
                                  unfused_stem=config.unfused_stem, triton_depthwise=config.triton_depthwise,
                                  fused_training=config.fused_training)
    image_size = config.image_size if config.image_size is not None else candidates.resolution
    timer = Timer(device, config.warmup, config.repeats, config.iterations)
    tolerance = config.check_tolerance or (1e-4 if dtype == torch.float32 else 5e-2)
    for task in config.tasks:
        for mode in config.modes:
            for candidate in candidates.for_task(task):
                row = measure(candidate, task, mode, device=device, dtype=dtype, memory_format=fmt,
                              batch_size=1 if task == "latency" else batch, image_size=image_size, timer=timer,
                              reference=candidates.reference, tolerance=tolerance)
                result.rows.append(row)
                log(format_row(row))
    return result


def format_row(row: BenchRow) -> str:
    speed = f"{row.images_per_second:10.1f} img/s {row.ms_per_batch:9.3f} ms" if row.images_per_second else " " * 28
    memory = f"{row.peak_memory_mib:9.0f} MiB" if row.peak_memory_mib is not None else " " * 13
    error = f"err {row.error_vs_reference:.1e}" if row.error_vs_reference is not None else ""
    return f"{row.task:9} {row.mode:18} {row.candidate:20} {speed} {memory} {error} {row.note}".rstrip()


def format_table(result: BenchResult) -> str:
    """One line per row, with the speed ratio against timm's eager and best (fastest) row of the same task."""
    lines = [f"{'task':9} {'mode':18} {'candidate':20} {'img/s':>10} {'ms/batch':>12} {'peak MiB':>10} "
             f"{'x timm eager':>12} {'x timm best':>11}  note"]
    for row in result.rows:
        peers = [r for r in result.rows if r.task == row.task and r.candidate == "timm" and r.images_per_second]
        eager = next((r.images_per_second for r in peers if r.mode == "eager"), None)
        best = max((r.images_per_second for r in peers), default=None)
        speed = row.images_per_second
        cells = [f"{speed:10.1f}" if speed else f"{'-':>10}",
                 f"{row.ms_per_batch:12.3f}" if row.ms_per_batch else f"{'-':>12}",
                 f"{row.peak_memory_mib:10.0f}" if row.peak_memory_mib is not None else f"{'-':>10}",
                 f"{speed / eager:12.2f}" if speed and eager else f"{'-':>12}",
                 f"{speed / best:11.2f}" if speed and best else f"{'-':>11}"]
        note = row.note
        if row.error_vs_reference is not None:
            note = f"err {row.error_vs_reference:.1e} {note}".rstrip()
        lines.append(f"{row.task:9} {row.mode:18} {row.candidate:20} {' '.join(cells)}  {note}".rstrip())
    return "\n".join(lines)
