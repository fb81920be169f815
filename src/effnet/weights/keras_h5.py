"""Keras weights files read with h5py alone (no TensorFlow, no Keras): `layer/variable` -> tensor.

Formats:
- Keras 3 `.weights.h5` (`model.save_weights`): `layers/<name>/vars/0..n`, variables unnamed, layers
  named by class and creation order; variable names come from `_VARIABLES` by the layer's class.
- legacy `.h5`: Keras 2 `save_weights` (root attribute `layer_names`) or `model.save` of Keras 2
  or 3 (the same under `model_weights`); each layer group lists its `weight_names`.
- `.keras` (Keras 3 `model.save`): a zip archive holding `model.weights.h5`.
Tensors keep Keras' layouts (HWIO kernels); `converters.keras` turns them into effnet's.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.errors import WeightsError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")

# Keras 3 layer class (snake case, as `.weights.h5` names layers) -> its variables in creation order.
_VARIABLES = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
    "normalization": ("mean", "variance", "count"),
}
_NUMBERED = re.compile(r"(?P<kind>.+?)(?:_\d+)?")


def is_keras_file(path: str | os.PathLike) -> bool:
    """A Keras file by its name, or an HDF5 file by its first bytes."""
    path = Path(path)
    if path.name.endswith(KERAS_SUFFIXES):
        return True
    try:
        with open(path, "rb") as stream:
            return stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def _tensor(dataset: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(dataset[()]))


def _variable_names(layer: str, count: int) -> tuple[str, ...]:
    kind = _NUMBERED.fullmatch(layer)["kind"]
    names = _VARIABLES.get(kind, ())
    return names[:count] if len(names) >= count else tuple(str(index) for index in range(count))


def _read_keras3(group: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """`layers/<name>/vars/<i>` (and nested `layers`) -> `name/variable`."""
    state_dict: dict[str, torch.Tensor] = {}
    for name, layer in group.get("layers", {}).items():
        variables = layer.get("vars", {})
        names = _variable_names(name, len(variables))
        for index in range(len(variables)):
            state_dict[f"{prefix}{name}/{names[index]}"] = _tensor(variables[str(index)])
        state_dict.update(_read_keras3(layer, prefix=f"{prefix}{name}/"))
    return state_dict


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(group: Any) -> dict[str, torch.Tensor]:
    """Layer groups named by `layer_names`, variables by `weight_names` (`stem_conv/kernel:0`)."""
    state_dict: dict[str, torch.Tensor] = {}
    for layer in map(_text, group.attrs["layer_names"]):
        for weight in map(_text, group[layer].attrs.get("weight_names", [])):
            variable = weight.split("/")[-1].split(":")[0]
            state_dict[f"{layer}/{variable}"] = _tensor(group[layer][weight])
    return state_dict


def _read_hdf5(handle: Any, source: str) -> dict[str, torch.Tensor]:
    if "layer_names" in handle.attrs:
        return _read_legacy(handle)
    if "model_weights" in handle and "layer_names" in handle["model_weights"].attrs:
        return _read_legacy(handle["model_weights"])
    if "layers" in handle:
        return _read_keras3(handle)
    raise WeightsError(f"{source}: an HDF5 file without Keras weights (no layer_names, model_weights or layers)")


def read_keras_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A Keras `.weights.h5`, legacy `.h5` or `.keras` file as `layer/variable` -> tensor."""
    try:
        import h5py
    except ImportError:
        raise WeightsError("reading Keras weights needs h5py: pip install h5py (or 'effnet[convert]')") from None
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                if "model.weights.h5" not in archive.namelist():
                    raise WeightsError(f"{path}: a zip archive without model.weights.h5 (not a .keras file)")
                data = io.BytesIO(archive.read("model.weights.h5"))
            with h5py.File(data, "r") as handle:
                state_dict = _read_hdf5(handle, str(path))
        else:
            with h5py.File(path, "r") as handle:
                state_dict = _read_hdf5(handle, str(path))
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise WeightsError(f"{path}: not a readable Keras weights file ({str(error).splitlines()[0]})") from None
    if not state_dict:
        raise WeightsError(f"{path}: a Keras file without any weights")
    return state_dict
