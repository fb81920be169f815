"""Strict loading: every key and shape must fit, or one error names the first offenders."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from effnet.errors import WeightsError

_SHOW = 5


def _describe(keys: list[str], tensors: Mapping[str, torch.Tensor]) -> str:
    shown = ", ".join(f"{key} {tuple(tensors[key].shape)}" for key in keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def check_state_dict(model_state: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor],
                     source: str = "state dict") -> None:
    """Raise WeightsError unless `state_dict` has exactly the model's keys and shapes."""
    missing = [key for key in model_state if key not in state_dict]
    unexpected = [key for key in state_dict if key not in model_state]
    mismatched = [key for key in model_state
                  if key in state_dict and tuple(model_state[key].shape) != tuple(state_dict[key].shape)]
    problems = []
    if mismatched:
        pairs = ", ".join(f"{key}: model {tuple(model_state[key].shape)} vs weights {tuple(state_dict[key].shape)}"
                          for key in mismatched[:_SHOW])
        problems.append(f"{len(mismatched)} shape mismatch(es): {pairs}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_describe(missing, model_state)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_describe(unexpected, state_dict)}")
    if problems:
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(problems))


def _unused_by(model: nn.Module, key: str) -> bool:
    """Parts of a full classifier's weights that `model` deliberately lacks."""
    features_only = hasattr(model, "feature_info")
    if key.startswith("classifier."):
        return not isinstance(getattr(model, "classifier", None), nn.Linear)
    if features_only and key.startswith(("conv_head.", "bn2.")):
        return True
    if features_only and key.startswith("blocks."):
        return int(key.split(".")[1]) >= len(model.blocks)
    return False


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load `state_dict` strictly, allowing only what a user means by it.

    A feature extractor ignores the head; a classifier with another class count keeps its fresh
    classifier (fine-tuning). Anything else that does not fit raises; nothing loads partially.
    """
    model_state = model.state_dict()
    state_dict = {key: value for key, value in state_dict.items()
                  if key in model_state or not _unused_by(model, key)}
    new_head = "classifier.weight" in model_state and "classifier.weight" in state_dict and (
        state_dict["classifier.weight"].shape[0] != model_state["classifier.weight"].shape[0])
    if new_head:  # fine-tuning to another class count: keep the model's fresh classifier
        state_dict["classifier.weight"] = model_state["classifier.weight"]
        state_dict["classifier.bias"] = model_state["classifier.bias"]
    check_state_dict(model_state, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
