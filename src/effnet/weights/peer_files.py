"""A peer's checkpoint with what its own files say about it: weights, preprocessing, class names.

A checkpoint is one file (PyTorch `.pth`/`.pt`/`.bin`, `.safetensors`, Keras `.h5`/`.weights.h5`/
`.keras`) or a folder as the hubs lay them out: a transformers `save_pretrained` folder
(config.json with `model_type: efficientnet`, preprocessor_config.json, model.safetensors or
pytorch_model.bin) or a timm hub folder (config.json with `architecture` and `pretrained_cfg`,
model.safetensors). The JSON files are read for a folder, or for a weights file with a hub's
standard name; a config.json of any other kind is not the peer's and is ignored.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from effnet.errors import WeightsError
from effnet.weights.converters import keras as from_keras
from effnet.weights.converters import timm as from_timm
from effnet.weights.converters import transformers as from_transformers
from effnet.weights.io import read_checkpoint
from effnet.weights.keras_h5 import is_keras_file, read_keras_weights

# Weights file names in a hub folder, in order of preference.
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.weights.h5", "model.keras")


@dataclass
class PeerCheckpoint:
    """A peer's state dict in its own layout, and what its files state beside the tensors."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    source: str | None = None  # set where the format itself tells (Keras' HDF5), else from the keys
    architecture: str | None = None  # the peer model its files name (timm's `architecture`)
    preprocessing: dict[str, Any] = field(default_factory=dict)  # DataConfig fields its files state
    class_names: list[str] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # provenance, kept in the output's metadata


def _weights_path(path: Path) -> Path:
    if not path.is_dir():
        return path
    for name in HUB_WEIGHTS:
        if (path / name).is_file():
            return path / name
    raise WeightsError(f"{path}: a folder without weights (expected one of {', '.join(HUB_WEIGHTS)})")


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: not readable JSON ({error})") from None
    return data if isinstance(data, dict) else None


def _with_transformers_files(peer: PeerCheckpoint, config: dict[str, Any], folder: Path) -> None:
    from_transformers.check_config(config)
    peer.source = from_transformers.SOURCE
    peer.class_names = from_transformers.class_names(config)
    processor = _json(folder / "preprocessor_config.json")
    peer.preprocessing = from_transformers.preprocessing(processor)
    peer.notes["preprocessing"] = ("preprocessor_config.json" if processor is not None else
                                   "EfficientNetImageProcessor defaults (no preprocessor_config.json)")


def _with_timm_files(peer: PeerCheckpoint, config: dict[str, Any]) -> None:
    peer.source = from_timm.SOURCE
    peer.architecture = str(config["architecture"])
    peer.preprocessing = from_timm.hub_preprocessing(config["pretrained_cfg"])
    peer.class_names = from_timm.hub_class_names(config)
    peer.notes["preprocessing"] = "timm pretrained_cfg (config.json)"


def read_peer(path: str | os.PathLike) -> PeerCheckpoint:
    """Read a peer's checkpoint file or hub folder (see the module notes) without unpickling code."""
    given = Path(path)
    if not given.exists():
        raise WeightsError(f"checkpoint not found: {given}")
    weights_path = _weights_path(given)
    if is_keras_file(weights_path):
        state_dict = read_keras_weights(weights_path)
        peer = PeerCheckpoint(weights_path, state_dict, source=from_keras.SOURCE,
                              preprocessing=from_keras.preprocessing(state_dict))
        if peer.preprocessing:
            peer.notes["preprocessing"] = "Keras Normalization layer"
        return peer
    peer = PeerCheckpoint(weights_path, read_checkpoint(weights_path))
    if given.is_dir() or weights_path.name in HUB_WEIGHTS:
        config = _json(weights_path.parent / "config.json") or {}
        if config.get("model_type") == "efficientnet":
            _with_transformers_files(peer, config, weights_path.parent)
        elif isinstance(config.get("architecture"), str) and isinstance(config.get("pretrained_cfg"), dict):
            _with_timm_files(peer, config)
    return peer
