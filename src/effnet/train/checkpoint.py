"""Checkpoints that lose nothing: atomic writes, rotation, RNG capture, and safe loading.

A checkpoint holds only tensors and plain containers, so it loads with
`torch.load(weights_only=True)`; anything that would need code execution is refused.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.errors import WeightsError
from effnet.weights.io import torch_load_safely

_NAME = re.compile(r"^step-(\d{9})\.pt$")


def capture_rng() -> dict[str, Any]:
    """Every random stream a run draws from: Python, NumPy, torch CPU and CUDA."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint without unpickling code; refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    return torch_load_safely(path)


class CheckpointManager:
    """`DIR/step-000001234.pt` files, the last `keep_last` kept, plus `DIR/best.pt`."""

    def __init__(self, directory: Path, keep_last: int = 2) -> None:
        self.directory = Path(directory)
        self.keep_last = max(1, keep_last)

    def steps(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _NAME.match(p.name))

    def latest(self) -> Path | None:
        found = self.steps()
        return found[-1] if found else None

    def save(self, payload: dict[str, Any], step: int, is_best: bool = False) -> Path:
        path = self.directory / f"step-{step:09d}.pt"
        atomic_save(payload, path)
        if is_best:
            temporary = self.directory / ".best.pt.tmp"
            shutil.copyfile(path, temporary)
            os.replace(temporary, self.directory / "best.pt")
        for old in self.steps()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path
