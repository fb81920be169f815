"""Safe weights I/O: effnet's self-contained safetensors files, and peers' checkpoints.

Nothing here unpickles arbitrary objects: safetensors, or `torch.load(weights_only=True)` with no
fallback. An effnet weights file stores its spec, data config and class names in the safetensors
metadata, so one file is enough to rebuild the model.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from effnet.errors import SpecError, WeightsError
from effnet.folders import folder_problem
from effnet.spec.data import DataConfig
from effnet.spec.serialize import spec_from_dict, spec_to_dict
from effnet.spec.types import NetworkSpec

FORMAT = "effnet"
FORMAT_VERSION = "1"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class WeightsFile:
    state_dict: dict[str, torch.Tensor]
    spec: NetworkSpec
    data_config: DataConfig
    class_names: list[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        weight = self.state_dict.get("classifier.weight")
        return int(weight.shape[0]) if weight is not None else 0


def _resolve_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return path


def save_weights_file(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], spec: NetworkSpec,
                      data_config: DataConfig, class_names: list[str] | None = None,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Write a self-contained effnet weights file atomically (temporary file, fsync, rename)."""
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": json.dumps(spec_to_dict(spec)),
        "data_config": json.dumps(data_config.as_dict()),
    }
    if class_names is not None:
        metadata["class_names"] = json.dumps(list(class_names))
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in state_dict.items()}
    problem = folder_problem(path.parent)
    if problem:
        raise WeightsError(f"cannot write {path}: {problem}")
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise WeightsError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:  # a full disk, or a folder at `path`
        raise WeightsError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = _resolve_path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None


def load_weights_file(path: str | os.PathLike) -> WeightsFile:
    """Read an effnet weights file (or a run folder's `model.safetensors`)."""
    path = _resolve_path(path)
    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT or "spec" not in metadata:
        raise WeightsError(f"{path}: not an effnet weights file (no spec in its metadata); "
                           "convert it with `effnet convert --from SOURCE --model NAME IN OUT.safetensors`")
    try:
        spec = spec_from_dict(json.loads(metadata["spec"]))
        data_config = DataConfig.from_dict(json.loads(metadata["data_config"]))
        names = json.loads(metadata["class_names"]) if "class_names" in metadata else None
    except (json.JSONDecodeError, KeyError, TypeError, SpecError) as error:
        raise WeightsError(f"{path}: damaged effnet metadata ({error})") from None
    try:
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: cannot read tensors ({error})") from None
    return WeightsFile(state_dict, spec, data_config, names, metadata)


_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")


def torch_load_safely(path: Path) -> Any:
    """`torch.load` without unpickling code: a file that names code to run is refused, one that is no
    pickle at all (a text file, say) is called what it is; both as one WeightsError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if named:  # the pickle asks for a function or class outside tensors and plain containers
            raise WeightsError(f"{path}: refused, loading it would run code from the file "
                               f"(only tensors and plain containers are accepted): {named[0]}") from None
        raise WeightsError(f"{path}: not a PyTorch checkpoint (torch.load cannot unpickle it)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable checkpoint ({str(error).splitlines()[0]})") from None


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a PyTorch checkpoint, loaded without unpickling code.

    Unwraps the usual containers (`{"state_dict": ...}`, `{"model": ...}`) and DDP's `module.` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            data: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(f"{path}: cannot read safetensors ({error})") from None
    else:
        data = torch_load_safely(path)
    for key in _CONTAINER_KEYS:
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    if data and all(key.startswith("module.") for key in data):
        data = {key[len("module."):]: value for key, value in data.items()}
    return data
