"""Weights out: export to ONNX, TorchScript or torch.export, each checked against eager PyTorch."""
from effnet.export.core import (
    DEFAULT_OPSET,
    FORMATS,
    ExportReport,
    export_model,
    parity_sizes,
)
from effnet.export.errors import ExportError, ParityError
from effnet.export.fold import fold_batchnorm
from effnet.export.parity import ParityCheck, check_parity, load_runner, relative_error

__all__ = [
    "DEFAULT_OPSET", "FORMATS", "ExportReport", "export_model", "parity_sizes", "ExportError", "ParityError",
    "fold_batchnorm", "ParityCheck", "check_parity", "load_runner", "relative_error",
]
