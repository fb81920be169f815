"""Train a set of specs as separate `effnet train` processes: in parallel, resumable, optionally on Ray.

Each run has its own folder; one whose `summary.json` exists is finished and never retrained, and
an interrupted one continues from its last checkpoint (`--resume auto`). The runner imports no
torch: every run is a fresh process with its own share of the CPU threads (or its own GPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from effnet.errors import EffnetError
from effnet.spec import spec_to_dict
from effnet.spec.types import NetworkSpec


@dataclass
class RunRequest:
    key: str
    spec: NetworkSpec
    output: Path
    train_args: list[str] = field(default_factory=list)  # shared options: --data, --epochs, --seed, ...


@dataclass
class RunResult:
    key: str
    output: Path
    summary: dict | None
    wall_seconds: float
    reused: bool
    error: str | None = None


def _command(request: RunRequest, gpu: str | None = None) -> list[str]:
    spec_file = request.output / "spec.json"
    # A run given a GPU trains on it or fails, never on the CPU instead (a --train-arg=--device=... still wins).
    device = ["--device", "cuda"] if gpu is not None else []
    return [sys.executable, "-m", "effnet", "train", "--spec", str(spec_file), "--image-size",
            str(request.spec.resolution), "--output", str(request.output), "--resume", "auto", *device,
            *request.train_args]


def _environment(threads: int, gpu: str | None) -> dict[str, str]:
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if gpu is not None:
        environment["CUDA_VISIBLE_DEVICES"] = gpu
    return environment


def run_one(request: RunRequest, threads: int = 1, gpu: str | None = None) -> RunResult:
    """Train one spec unless its run already finished; never raises for a failed training."""
    summary_file = request.output / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        return RunResult(request.key, request.output, summary, summary.get("wall_seconds", 0.0), reused=True)
    request.output.mkdir(parents=True, exist_ok=True)
    (request.output / "spec.json").write_text(json.dumps(spec_to_dict(request.spec), indent=2))
    started = time.perf_counter()
    with open(request.output / "train.log", "a") as log:
        code = subprocess.run(_command(request, gpu), stdout=subprocess.DEVNULL, stderr=log,
                              env=_environment(threads, gpu)).returncode
    wall = time.perf_counter() - started
    if code != 0 or not summary_file.is_file():
        tail = (request.output / "train.log").read_text().strip().splitlines()[-1:] or ["no output"]
        return RunResult(request.key, request.output, None, wall, reused=False,
                         error=f"exit {code}: {tail[0]}")
    return RunResult(request.key, request.output, json.loads(summary_file.read_text()), wall, reused=False)


def run_all(requests: Sequence[RunRequest], parallel: int = 1, gpus: Sequence[str] = (),
            ray_address: str | None = None) -> list[RunResult]:
    """Run every request, `parallel` at a time (or as Ray tasks), in the order given."""
    if parallel < 1:
        raise EffnetError(f"parallel must be at least 1, got {parallel}")
    if ray_address is not None:
        if gpus:
            raise EffnetError("--gpus assigns this machine's GPUs; with --ray each candidate is a one-CPU Ray task")
        from effnet.search.ray_backend import run_on_ray

        return run_on_ray(requests, ray_address)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    slots = [gpus[index % len(gpus)] if gpus else None for index in range(len(requests))]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(run_one, request, threads, gpu) for request, gpu in zip(requests, slots)]
        return [future.result() for future in futures]
