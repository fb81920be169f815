"""Inference backends besides eager PyTorch: an onnxruntime session behind one small interface.

`OnnxRuntimeSession` runs an ONNX file (or its bytes) on the CPU execution provider with every
graph optimisation on (constant folding, Conv+BatchNorm and Conv+activation fusion, layout
transforms), and takes and returns torch tensors, so callers need not know about numpy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.errors import EffnetError

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class BackendError(EffnetError, ValueError):
    """A backend that cannot be built: a missing package, an unreadable model file, a bad option."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError("the onnxruntime backend needs onnxruntime: pip install 'effnet[export]'") from None
    return onnxruntime


def session_options(intra_op_threads: int | None = None, optimization_level: str = "all") -> Any:
    """onnxruntime `SessionOptions`: graph optimisations at `optimization_level`, sequential execution.

    `intra_op_threads` None keeps onnxruntime's default (one per physical core); benchmarks set it
    to torch's thread count so both runtimes get the same cores.
    """
    ort = import_onnxruntime()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization_level not in levels:
        raise BackendError(f"optimization_level must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                           f"got {optimization_level!r}")
    if intra_op_threads is not None and intra_op_threads < 1:
        raise BackendError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization_level]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
    return options


class OnnxRuntimeSession:
    """An ONNX model with one image input and one output, run by onnxruntime on the CPU."""

    def __init__(self, model: str | os.PathLike | bytes, *, intra_op_threads: int | None = None,
                 optimization_level: str = "all") -> None:
        ort = import_onnxruntime()
        options = session_options(intra_op_threads, optimization_level)
        source = model if isinstance(model, bytes) else str(Path(model))
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise BackendError(f"ONNX file not found: {model}")
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
            raise BackendError(f"onnxruntime cannot load {model if not isinstance(model, bytes) else 'the model'}: "
                               f"{error}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"expected an ONNX model with one input and one output, got "
                               f"{len(inputs)} and {len(outputs)}")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)  # ints for static dims, names for dynamic ones

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's output for a `(N, C, H, W)` float batch, as a CPU float tensor."""
        array = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        (output,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(output)

    __call__ = run


def session_for_model(model: torch.nn.Module, image_size: tuple[int, int], *, intra_op_threads: int | None = None,
                      dynamo: bool = True) -> OnnxRuntimeSession:
    """Export `model` to ONNX at a fixed `image_size` (dynamic batch), check parity, load it into onnxruntime.

    The file lives in a temporary folder only while onnxruntime reads it. Static height and width:
    the predictor's preprocessing always yields the same crop, and a static graph lets onnxruntime
    plan every buffer ahead.
    """
    import tempfile

    from effnet.export import export_model

    with tempfile.TemporaryDirectory(prefix="effnet-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        export_model(model, "onnx", path, image_sizes=[image_size], dynamic_hw=False, dynamo=dynamo,
                     verbose=False)
        return OnnxRuntimeSession(path.read_bytes(), intra_op_threads=intra_op_threads)
