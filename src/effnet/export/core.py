"""`export_model`: an effnet classifier to ONNX, TorchScript or a torch.export `.pt2`, checked for parity.

Every export has a dynamic batch dimension, and dynamic height and width unless `dynamic_hw=False`
(TF "same" padding included: `SameConv2d` computes its padding with plain integer arithmetic that
each format records symbolically). After writing the file it is loaded back by its own runtime and
compared with eager PyTorch at every pair of two batch sizes and two input sizes (one when H and W
are static); a relative error above `tolerance` raises `ParityError`.

Format choices:
- ONNX, `dynamo=True` (the default): `torch.onnx.export` through torch.export, torch's own default
  since 2.9 and the supported path (the TorchScript-based exporter is deprecated with torch.jit).
  It captures the same graph as the `torch-export` format, with symbolic shapes checked at export
  time. Its cost is time: about 10-20 s for B0 on a small CPU against under 2 s for `dynamo=False`,
  which remains an explicit option; the files run equally fast in onnxruntime.
- TorchScript: `torch.jit.trace`, not `script`. The network's forward has no branch on data or
  shapes once in eval mode, and the tracer records `x.shape` reads and the arithmetic on them
  as graph ops, so SameConv2d's padding stays dynamic (the parity check at an odd, non-square size
  proves it). Scripting would fail on the trunk's gradient-checkpointing branch and on `super()`.
- torch.export: `Dim` for batch, height and width, saved with `torch.export.save`.

Exports run with autograd on (the model in eval mode): the graph then holds the out-of-place
forms of the block's in-place shortcuts, so it stays valid for any caller.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from effnet.export.errors import ExportError
from effnet.export.fold import fold_batchnorm
from effnet.export.parity import DEFAULT_TOLERANCE, ParityCheck, check_parity, load_runner

FORMATS = ("onnx", "torchscript", "torch-export")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "torch-export": ".pt2"}  # what each format's files are called
DEFAULT_OPSET = 18
# EfficientNet downsamples by 32: from 33 px on, the last feature map is at least 2x2. torch.export
# treats sizes 0 and 1 as special (it specialises on them), so a range down to a 1x1 map fails.
MIN_DYNAMIC_SIZE = 33
MAX_DYNAMIC_SIZE = 4096
MAX_BATCH_SIZE = 4096
EXAMPLE_BATCH_SIZE = 2  # the traced example: batch 1 would be specialised by torch.export

ImageSize = int | tuple[int, int]


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely it matches eager PyTorch."""

    format: str
    output: str
    dynamic_batch: bool
    dynamic_hw: bool
    opset: int | None
    dynamo: bool | None
    folded_batchnorm: bool
    export_seconds: float
    tolerance: float
    checks: list[ParityCheck] = field(default_factory=list)

    @property
    def max_relative_error(self) -> float:
        return max(check.relative_error for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "output": self.output, "dynamic_batch": self.dynamic_batch,
            "dynamic_hw": self.dynamic_hw, "opset": self.opset, "dynamo": self.dynamo,
            "folded_batchnorm": self.folded_batchnorm, "export_seconds": self.export_seconds,
            "tolerance": self.tolerance, "max_relative_error": self.max_relative_error,
            "checks": [check.as_dict() for check in self.checks],
        }

    def summary(self) -> str:
        sizes = sorted({(check.height, check.width) for check in self.checks})
        batches = sorted({check.batch_size for check in self.checks})
        return (f"{self.format}: wrote {self.output} in {self.export_seconds:.1f}s; parity with eager PyTorch "
                f"at batch {', '.join(map(str, batches))} x {', '.join(f'{h}x{w}' for h, w in sizes)}: "
                f"max relative error {self.max_relative_error:.2e} (tolerance {self.tolerance:g})")


def parity_sizes(resolution: int, dynamic_hw: bool = True) -> list[tuple[int, int]]:
    """The default check sizes: the model's own, and with dynamic H/W a non-square one with an odd side."""
    if not dynamic_hw:
        return [(resolution, resolution)]
    return [(resolution, resolution), (resolution + 1, resolution + 2)]


def _normalise_sizes(model: nn.Module, image_sizes: Sequence[ImageSize] | None,
                     dynamic_hw: bool) -> list[tuple[int, int]]:
    if image_sizes is None:
        data_config = getattr(model, "data_config", None)
        if data_config is None:
            raise ExportError("the model has no data_config; pass image_sizes=")
        return parity_sizes(int(data_config.input_size[-1]), dynamic_hw)
    sizes = [(size, size) if isinstance(size, int) else (int(size[0]), int(size[1])) for size in image_sizes]
    if not sizes:
        raise ExportError("image_sizes must name at least one size")
    if not dynamic_hw and len(set(sizes)) > 1:
        raise ExportError(f"with static height and width (dynamic_hw=False) the file runs at one size only, "
                          f"got image_sizes {sizes}")
    low = MIN_DYNAMIC_SIZE if dynamic_hw else 1
    for height, width in sizes:
        if not (low <= height <= MAX_DYNAMIC_SIZE and low <= width <= MAX_DYNAMIC_SIZE):
            raise ExportError(f"image size {height}x{width} is outside {low}..{MAX_DYNAMIC_SIZE}"
                              + (" (dynamic height and width start at 33 px)" if dynamic_hw else ""))
    return sizes


def _dynamic_dims(dynamic_hw: bool) -> dict[int, Any]:
    from torch.export import Dim

    dims: dict[int, Any] = {0: Dim("batch", min=1, max=MAX_BATCH_SIZE)}
    if dynamic_hw:
        dims[2] = Dim("height", min=MIN_DYNAMIC_SIZE, max=MAX_DYNAMIC_SIZE)
        dims[3] = Dim("width", min=MIN_DYNAMIC_SIZE, max=MAX_DYNAMIC_SIZE)
    return dims


def _export_onnx(model: nn.Module, example: torch.Tensor, output: Path, opset: int, dynamo: bool,
                 dynamic_hw: bool) -> None:
    for package in ("onnx", "onnxscript") if dynamo else ("onnx",):
        try:
            __import__(package)
        except ImportError:
            raise ExportError(f"ONNX export needs {package}: pip install 'effnet[export]'") from None
    if dynamo:
        torch.onnx.export(model, (example,), str(output), dynamo=True, dynamic_shapes=(_dynamic_dims(dynamic_hw),),
                          input_names=["images"], output_names=["logits"], opset_version=opset,
                          external_data=False, verbose=False)
        return
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    torch.onnx.export(model, (example,), str(output), dynamo=False, input_names=["images"],
                      output_names=["logits"], dynamic_axes={"images": axes, "logits": {0: "batch"}},
                      opset_version=opset, do_constant_folding=True)


def _export_torchscript(model: nn.Module, example: torch.Tensor, output: Path) -> None:
    traced = torch.jit.trace(model, (example,), check_trace=False)  # the parity check is the real check
    torch.jit.save(traced, str(output))


def _export_torch_export(model: nn.Module, example: torch.Tensor, output: Path, dynamic_hw: bool) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=(_dynamic_dims(dynamic_hw),))
    torch.export.save(program, str(output))


def _check_options(model: nn.Module, format: str, batch_sizes: Sequence[int], opset: int | None,
                   dynamo: bool, tolerance: float) -> None:
    if format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not isinstance(model, nn.Module):
        raise ExportError(f"export_model needs a torch.nn.Module, got {type(model).__name__}")
    if not batch_sizes or any(not 1 <= size <= MAX_BATCH_SIZE for size in batch_sizes):
        raise ExportError(f"batch_sizes must be 1..{MAX_BATCH_SIZE}, got {list(batch_sizes)}")
    if not tolerance > 0:  # checked before exporting, which takes a while
        raise ExportError(f"tolerance must be positive, got {tolerance:g}")
    if format != "onnx" and opset is not None:
        raise ExportError(f"opset only applies to onnx, not {format}")
    if opset is not None and not 9 <= opset <= 23:
        raise ExportError(f"opset must be 9..23, got {opset}")
    if format == "onnx" and dynamo and opset is not None and opset < 18:
        raise ExportError(f"the dynamo ONNX exporter writes opset 18 or newer, got {opset}; "
                          "use dynamo=False for older opsets")


def _run_exporter(model: nn.Module, format: str, example: torch.Tensor, output: Path, opset: int,
                  dynamo: bool, dynamic_hw: bool) -> None:
    # torch.onnx prints progress on stdout: keep stdout for the caller's own output (--json).
    with contextlib.redirect_stdout(sys.stderr):
        if format == "onnx":
            _export_onnx(model, example, output, opset, dynamo, dynamic_hw)
        elif format == "torchscript":
            _export_torchscript(model, example, output)
        else:
            _export_torch_export(model, example, output, dynamic_hw)


def export_model(model: nn.Module, format: str, output: str | Path, *, batch_sizes: Sequence[int] = (1, 2),
                 image_sizes: Sequence[ImageSize] | None = None, opset: int | None = None, dynamo: bool = True,
                 dynamic_hw: bool = True, fold_bn: bool = False, tolerance: float = DEFAULT_TOLERANCE,
                 verbose: bool = True) -> ExportReport:
    """Export `model` to `output` in `format` (`onnx`, `torchscript`, `torch-export`), then check parity.

    batch_sizes, image_sizes: the parity grid (sizes as R or (H, W); default the model's resolution
        and, with dynamic H/W, one non-square size with an odd side); the first size is the example
        the exporter traces. The batch dimension is always dynamic.
    opset: ONNX opset (default 18); dynamo: ONNX through torch.export (default) or the TorchScript-
        based exporter (see the module docstring for why dynamo is the default).
    fold_bn: export `fold_batchnorm(model)` (faster eager and TorchScript; parity is still checked
        against the unfolded model).
    verbose: print the one-line summary (max relative error) on stderr.
    Raises `ExportError` for bad options or a failing exporter, `ParityError` above `tolerance`.
    """
    _check_options(model, format, batch_sizes, opset, dynamo, tolerance)
    sizes = _normalise_sizes(model, image_sizes, dynamic_hw)
    opset_used = (opset or DEFAULT_OPSET) if format == "onnx" else None
    output = Path(output).expanduser()
    if output.is_dir():
        raise ExportError(f"output {output} is a folder; name the file to write, e.g. {output / 'model'}"
                          f"{SUFFIXES.get(format, '')}")
    if format == "torch-export" and output.suffix != SUFFIXES[format]:
        raise ExportError(f"torch.export files must end in .pt2 (torch.export.load refuses others), got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        exported = fold_batchnorm(model) if fold_bn else model
        in_channels = _input_channels(model)
        example = torch.randn(max(EXAMPLE_BATCH_SIZE, *batch_sizes), in_channels, *sizes[0])
        _check_output(model, example)
        start = time.perf_counter()
        try:
            _run_exporter(exported, format, example, output, opset_used, dynamo, dynamic_hw)
        except ExportError:
            raise
        except Exception as error:  # exporters raise many untyped errors; keep the cause chained
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ExportError(f"{format} export failed: {first_line}") from error
        seconds = time.perf_counter() - start
        runner = load_runner(format, output)
        checks = check_parity(model, runner, sizes, batch_sizes, tolerance, in_channels)
    finally:
        model.train(was_training)
    report = ExportReport(format, str(output), True, dynamic_hw, opset_used, dynamo if format == "onnx" else None,
                          fold_bn, seconds, tolerance, checks)
    if verbose:
        print(report.summary(), file=sys.stderr)
    return report


def _input_channels(model: nn.Module) -> int:
    data_config = getattr(model, "data_config", None)
    return int(data_config.input_size[0]) if data_config is not None else 3


def _check_output(model: nn.Module, example: torch.Tensor) -> None:
    with torch.inference_mode():
        output = model(example[:1])
    if not isinstance(output, torch.Tensor):
        raise ExportError(f"export needs a model with one output tensor (a classifier), got {type(output).__name__}; "
                          "features_only models are not supported")
