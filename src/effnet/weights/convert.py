"""Converting peers' EfficientNet checkpoints into effnet's key layout and weights files.

`convert_state_dict` renames keys from the keys and shapes alone (one module per source in
`effnet.weights.converters`); `convert_file` goes from a peer's file or hub folder to a
self-contained effnet file, detecting the source and model when not given, choosing the model's
numerics from the table in `converters.matching`, and keeping the preprocessing and class names
the peer's own files state (`peer_files`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from effnet.errors import WeightsError
from effnet.models import create_model, get_entry
from effnet.spec.data import DataConfig
from effnet.weights.converters import CONVERTERS, Converter
from effnet.weights.converters import transformers as from_transformers
from effnet.weights.converters.matching import (
    PEER_MATCHES,
    PeerMatch,
    matches_for_model,
    models_for_source,
    peer_model,
)
from effnet.weights.detect import accepting_sources, detect_model, detect_source
from effnet.weights.io import save_weights_file
from effnet.weights.loading import load_into
from effnet.weights.peer_files import PeerCheckpoint, read_peer

SOURCES: tuple[str, ...] = tuple(CONVERTERS)

# Spec fields that decide a converted model's function but leave no trace in its keys.
_NUMERICS = ("padding", "bn_eps")

__all__ = ["SOURCES", "PEER_MATCHES", "PeerMatch", "Conversion", "convert_state_dict", "convert_checkpoint",
           "convert_file", "peer_model"]


def _converter(source: str) -> Converter:
    if source not in CONVERTERS:
        raise WeightsError(f"unknown source {source!r}; known sources: {', '.join(SOURCES)}")
    return CONVERTERS[source]


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a peer's EfficientNet state dict into effnet's layout; tensors are shared, not copied
    (Keras' are transposed into PyTorch layouts).

    source: one of `SOURCES` ("timm", "torchvision", "efficientnet_pytorch", "transformers", "keras").
    Every key must be understood: a state dict of another source or architecture raises
    WeightsError naming its first offending keys and shapes, never a partial result.
    """
    converter = _converter(source)
    try:
        return converter(state_dict)
    except WeightsError as error:
        guesses = [guess for guess in accepting_sources(state_dict) if guess != source]
        if not guesses:
            raise
        raise WeightsError(f"{error}; it looks like a {guesses[0]!r} state dict (pass source={guesses[0]!r})") from None


def _model_overrides(source: str, model_name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The table's overrides for (source, model), under the caller's own; refuse unknown pairs.

    A pair outside the table (say lukemelas weights into the symmetric-padding efficientnet_b0)
    loads without a single shape error yet computes something else, so it needs the caller to
    state the numerics (`padding`, `bn_eps`) explicitly.
    """
    matches = matches_for_model(source, model_name)
    if not matches and not any(name in overrides for name in _NUMERICS):
        raise WeightsError(
            f"{source} checkpoints do not match {model_name}'s numerics (padding, BN eps); use one of "
            f"{', '.join(models_for_source(source))}, or pass padding= and bn_eps= to convert anyway")
    table = dict(matches[0].overrides) if matches else {}
    return {**table, **overrides}


@dataclass(frozen=True)
class Conversion:
    """What `convert_file` wrote and what it picked."""

    path: Path
    source: str
    model_name: str
    detected: tuple[str, ...]  # which of "source", "model" were detected rather than given


def _source_of(peer: PeerCheckpoint, source: str | None) -> str:
    if source is None:
        return peer.source or detect_source(peer.state_dict)
    _converter(source)
    if peer.source is not None and peer.source != source:
        raise WeightsError(f"{peer.path} is a {peer.source} checkpoint, not {source} (pass --from {peer.source})")
    return source


def _check_architecture(peer: PeerCheckpoint, source: str, model_name: str) -> None:
    """Refuse a model other than the one the peer's files name (timm's `architecture`)."""
    named = [match for match in PEER_MATCHES if match.source == source and match.peer_name == peer.architecture]
    if named and named[0].model_name != model_name:
        raise WeightsError(f"{peer.path} holds {source} {peer.architecture} weights, which convert into "
                           f"{named[0].model_name}, not {model_name}")


def _data_config(model_config: DataConfig, peer: PeerCheckpoint, source: str) -> DataConfig:
    """The model's default preprocessing under what the peer's files state (see `peer_files`)."""
    fields = peer.preprocessing
    if not fields and source == from_transformers.SOURCE:
        fields = from_transformers.preprocessing(None)  # what EfficientNetImageProcessor() gives
        peer.notes["preprocessing"] = "EfficientNetImageProcessor defaults (no preprocessor_config.json)"
    try:
        return replace(model_config, **fields)
    except TypeError as error:
        raise WeightsError(f"{peer.path}: preprocessing effnet cannot represent ({error})") from None


def convert_file(in_path: str | os.PathLike, out_path: str | os.PathLike, source: str | None = None,
                 model_name: str | None = None, *, preprocessing: Mapping[str, Any] | None = None,
                 class_names: Sequence[str] | None = None, metadata: Mapping[str, str] | None = None,
                 **overrides: Any) -> Conversion:
    """Convert a peer's checkpoint (file or hub folder) into a self-contained effnet `.safetensors`.

    source and model_name default to what the checkpoint shows (`effnet.weights.detect`). The class
    count comes from the checkpoint's classifier (none: a headless model). The weights must load
    strictly into `effnet.create_model(model_name, **overrides)`, where the overrides default to
    what `converters.matching` records for this source and model; any mismatch raises WeightsError
    naming keys and shapes. The file's data config is the model's default under the preprocessing
    the peer's files state (transformers' preprocessor, Keras' Normalization layer, timm's
    pretrained_cfg), with the class names they give; `preprocessing` (DataConfig fields),
    `class_names` and `metadata` state what the caller knows beyond the files (a weights enum).
    """
    if source is not None:
        _converter(source)  # an unknown source fails before the file is read
    if model_name is not None:
        get_entry(model_name)  # so does an unknown model
    detected = tuple(name for name, given in (("source", source), ("model", model_name)) if given is None)
    peer = read_peer(in_path)
    peer.preprocessing.update(preprocessing or {})
    peer.class_names = list(class_names) if class_names is not None else peer.class_names
    peer.notes.update(metadata or {})
    chosen = _source_of(peer, source)
    state_dict = convert_state_dict(peer.state_dict, chosen)
    if model_name is None:
        model_name = detect_model(chosen, state_dict, peer.architecture, peer.path).model_name
    _check_architecture(peer, chosen, model_name)
    classifier = state_dict.get("classifier.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else 0
    model = create_model(model_name, num_classes=num_classes, **_model_overrides(chosen, model_name, overrides))
    load_into(model, state_dict, source=f"{in_path} (converted from {chosen})")
    names = peer.class_names if peer.class_names and len(peer.class_names) == num_classes else None
    data_config = _data_config(model.data_config, peer, chosen)
    path = save_weights_file(out_path, state_dict, model.spec, data_config, class_names=names,
                             extra={"source": chosen, **peer.notes})
    return Conversion(path, chosen, model_name, detected)


def convert_checkpoint(in_path: str | os.PathLike, source: str | None, model_name: str | None,
                       out_path: str | os.PathLike, **overrides: Any) -> Path:
    """`convert_file`, returning only the written path; `effnet.create_model(model_name,
    pretrained=out_path)` then reproduces the peer's logits (for example torchvision's b5..b7
    convert with bn_eps=1e-3, as the table records)."""
    return convert_file(in_path, out_path, source, model_name, **overrides).path
