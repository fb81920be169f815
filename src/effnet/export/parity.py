"""Parity of an exported file with the eager model: load it back the way a deployment would, run both.

Each format is loaded by its own runtime, never by the object the exporter returned: ONNX through
onnxruntime, TorchScript through `torch.jit.load`, torch.export through `torch.export.load`. So a
check covers the file on disk, including what serialisation may lose.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from effnet.export.errors import ExportError, ParityError

Runner = Callable[[torch.Tensor], torch.Tensor]
DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityCheck:
    """One comparison: input shape and the relative error of the exported file's output."""

    batch_size: int
    height: int
    width: int
    relative_error: float

    def as_dict(self) -> dict[str, float | int]:
        return {"batch_size": self.batch_size, "height": self.height, "width": self.width,
                "relative_error": self.relative_error}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|: the worst element against the output's scale.

    Element-wise ratios blow up on logits near zero; the output's own scale does not.
    """
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return ((actual - expected).abs().max() / scale).item()


def load_runner(format: str, path: Path, intra_op_threads: int | None = None) -> Runner:
    """A function running the exported file at `path` on a CPU tensor batch."""
    if format == "onnx":
        from effnet.inference.backends import OnnxRuntimeSession

        session = OnnxRuntimeSession(path, intra_op_threads=intra_op_threads)
        return session.run
    if format == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
        return module
    if format == "torch-export":
        program = torch.export.load(str(path))
        return program.module()
    raise ExportError(f"format must be onnx, torchscript or torch-export, got {format!r}")


def check_parity(model: nn.Module, runner: Runner, sizes: Sequence[tuple[int, int]],
                 batch_sizes: Sequence[int], tolerance: float = DEFAULT_TOLERANCE,
                 in_channels: int = 3, seed: int = 0) -> list[ParityCheck]:
    """Compare `runner` with eager `model` on every (batch size, input size); raise above `tolerance`."""
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for height, width in sizes:
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, in_channels, height, width, generator=generator)
            with torch.inference_mode():
                expected = model(x).float()  # (N, classes)
                actual = torch.as_tensor(runner(x.clone())).float()
            if actual.shape != expected.shape:
                raise ParityError(f"input {tuple(x.shape)}: exported output has shape {tuple(actual.shape)}, "
                                  f"eager {tuple(expected.shape)}")
            checks.append(ParityCheck(batch_size, height, width, relative_error(actual, expected)))
    worst = max(checks, key=lambda check: check.relative_error)
    if not worst.relative_error <= tolerance:  # NaN fails too
        raise ParityError(f"exported model differs from eager PyTorch: relative error {worst.relative_error:.3g} "
                          f"> {tolerance:g} at batch {worst.batch_size}, {worst.height}x{worst.width}")
    return checks
