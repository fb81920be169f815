"""What the layer sweeps (depthwise_sweep.py, pointwise_sweep.py) share: their timer and their end."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from effnet.bench.measure import Timer


def sweep_timer(device: torch.device) -> Timer:
    """Medians of a few repeats on a GPU; on CPU (Triton's interpreter) the sweeps only prove that
    they run, so one call per timing."""
    return Timer(device, warmup=2, repeats=5, iterations=3) if device.type == "cuda" else Timer(device, 0, 1, 1)


def finish(out: Path | None, filename: str, device: torch.device, rows: list[dict], bound: float) -> int:
    """Write the rows to OUT/filename (if OUT is given); exit status 1 if any variant's error passed `bound`."""
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / filename).write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))
    worst = max(max(row["errors"].values()) for row in rows)
    return 0 if worst <= bound else 1
