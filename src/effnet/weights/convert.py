"""Converting peers' EfficientNet checkpoints into effnet's key layout and weights files.

`convert_state_dict` renames keys from the keys and shapes alone (one module per source in
`effnet.weights.converters`); `convert_checkpoint` goes from a peer's file to a self-contained
effnet file, choosing the model's numerics from the table in `converters.matching`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from effnet.errors import WeightsError
from effnet.models import create_model
from effnet.weights.converters import efficientnet_pytorch as from_efficientnet_pytorch
from effnet.weights.converters import timm as from_timm
from effnet.weights.converters import torchvision as from_torchvision
from effnet.weights.converters.matching import (
    PEER_MATCHES,
    PeerMatch,
    matches_for_model,
    models_for_source,
    peer_model,
)
from effnet.weights.io import read_checkpoint, save_weights_file
from effnet.weights.loading import load_into

_CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    from_timm.SOURCE: from_timm.convert,
    from_torchvision.SOURCE: from_torchvision.convert,
    from_efficientnet_pytorch.SOURCE: from_efficientnet_pytorch.convert,
}

SOURCES: tuple[str, ...] = tuple(_CONVERTERS)

# Spec fields that decide a converted model's function but leave no trace in its keys.
_NUMERICS = ("padding", "bn_eps")

__all__ = ["SOURCES", "PEER_MATCHES", "PeerMatch", "convert_state_dict", "convert_checkpoint", "peer_model"]


def _converter(source: str) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    if source not in _CONVERTERS:
        raise WeightsError(f"unknown source {source!r}; known sources: {', '.join(SOURCES)}")
    return _CONVERTERS[source]


def _guess_source(state_dict: Mapping[str, torch.Tensor], wrong: str) -> str | None:
    """The other source whose converter accepts `state_dict`, for a hint in the error message."""
    for source, converter in _CONVERTERS.items():
        if source == wrong:
            continue
        try:
            converter(state_dict)
        except WeightsError:
            continue
        return source
    return None


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a peer's EfficientNet state dict into effnet's layout; tensors are shared, not copied.

    source: one of `SOURCES` ("timm", "torchvision", "efficientnet_pytorch").
    Every key must be understood: a state dict of another source or architecture raises
    WeightsError naming its first offending keys and shapes, never a partial result.
    """
    converter = _converter(source)
    try:
        return converter(state_dict)
    except WeightsError as error:
        guess = _guess_source(state_dict, source)
        if guess is None:
            raise
        raise WeightsError(f"{error}; it looks like a {guess!r} state dict (pass source={guess!r})") from None


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


def convert_checkpoint(in_path: str | os.PathLike, source: str, model_name: str, out_path: str | os.PathLike,
                       **overrides: Any) -> Path:
    """Convert a peer's checkpoint into a self-contained effnet `.safetensors` file; returns its path.

    The class count comes from the checkpoint's classifier (none: a headless model). The weights
    must load strictly into `effnet.create_model(model_name, **overrides)`, where the overrides
    default to what `converters.matching` records for this source and model (for example
    bn_eps=1e-3 for torchvision's b5..b7); any mismatch raises WeightsError naming keys and shapes.
    Then `effnet.create_model(model_name, pretrained=out_path)` reproduces the peer's logits.
    """
    _converter(source)  # an unknown source fails before the file is read
    state_dict = convert_state_dict(read_checkpoint(in_path), source)
    classifier = state_dict.get("classifier.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else 0
    model = create_model(model_name, num_classes=num_classes, **_model_overrides(source, model_name, overrides))
    load_into(model, state_dict, source=f"{in_path} (converted from {source})")
    return save_weights_file(out_path, state_dict, model.spec, model.data_config, class_names=None,
                             extra={"source": source})
