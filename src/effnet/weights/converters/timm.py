"""timm's EfficientNet / EfficientNet-Lite (and their `tf_` ports): effnet uses timm's layout.

The one difference: timm builds expand-ratio-1 blocks (stage 0) as `DepthwiseSeparableConv`
with keys conv_dw, bn1, se.*, conv_pw, bn2; effnet builds every block as an MBConv, whose
unexpanded form names the same layers conv_dw, bn2, se.*, conv_pwl, bn3. A block is recognised
as depthwise-separable by its keys (conv_dw and conv_pw but no conv_pwl), not by its position.

Peer quirks worth knowing: timm's `tf_` models pad like TensorFlow ("same") and use BN eps 1e-3,
exactly like effnet's `tf_` twins; the non-`tf_` ones pad symmetrically with eps 1e-5. The key
names do not reveal which, so the effnet model name must be the timm model name (see `matching`);
a timm hub folder's config.json names it (`architecture`), with the preprocessing and labels.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from effnet.errors import WeightsError
from effnet.weights.converters.common import BATCH_NORM_PATTERN, rename

SOURCE = "timm"

_OUTSIDE_BLOCKS = re.compile(
    rf"conv_stem\.weight|bn1\.{BATCH_NORM_PATTERN}|conv_head\.weight|bn2\.{BATCH_NORM_PATTERN}"
    r"|classifier\.(?:weight|bias)")
_BLOCK = re.compile(
    rf"(?P<prefix>blocks\.\d+\.\d+)\.(?P<layer>conv_pw|conv_dw|conv_pwl|se\.conv_reduce|se\.conv_expand"
    rf"|bn1|bn2|bn3)\.(?P<field>{BATCH_NORM_PATTERN})")

# timm DepthwiseSeparableConv layer -> effnet MBConv (expand ratio 1) layer.
_DEPTHWISE_SEPARABLE = {
    "conv_dw": "conv_dw",
    "bn1": "bn2",
    "se.conv_reduce": "se.conv_reduce",
    "se.conv_expand": "se.conv_expand",
    "conv_pw": "conv_pwl",
    "bn2": "bn3",
}


def _fits(layer: str, field: str) -> bool:
    """Convolutions carry only a weight, SE convolutions a bias too, BatchNorms their five entries."""
    if layer.startswith("se."):
        return field in ("weight", "bias")
    if layer.startswith("conv"):
        return field == "weight"
    return True


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm EfficientNet keys -> effnet keys (identity except depthwise-separable blocks)."""
    blocks: dict[str, list[re.Match[str]]] = {}
    new_names: dict[str, str] = {}
    for key in state_dict:
        if _OUTSIDE_BLOCKS.fullmatch(key):
            new_names[key] = key
            continue
        match = _BLOCK.fullmatch(key)
        if match and _fits(match["layer"], match["field"]):
            blocks.setdefault(match["prefix"], []).append(match)
    for prefix, matches in blocks.items():
        layers = {match["layer"] for match in matches}
        separable = "conv_pwl" not in layers and "conv_pw" in layers and "conv_dw" in layers
        for match in matches:
            layer = _DEPTHWISE_SEPARABLE.get(match["layer"]) if separable else match["layer"]
            if layer is not None:  # else (bn3 in a separable block) it is reported as unknown
                new_names[match.string] = f"{prefix}.{layer}.{match['field']}"
    return rename(SOURCE, state_dict, new_names)


# --- a timm hub folder's config.json (`architecture`, `pretrained_cfg`, labels) -----------------

_CROP_MODES = ("center", "squash")


def hub_preprocessing(pretrained_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """DataConfig fields from a timm `pretrained_cfg` (input size, crop, interpolation, mean, std)."""
    fields: dict[str, Any] = {}
    if "input_size" in pretrained_cfg:
        fields["input_size"] = tuple(int(size) for size in pretrained_cfg["input_size"])
    if "crop_pct" in pretrained_cfg:
        fields["crop_pct"] = float(pretrained_cfg["crop_pct"])
    mode = pretrained_cfg.get("crop_mode", "center")
    if mode not in _CROP_MODES:
        raise WeightsError(f"timm crop_mode {mode!r} has no effnet equivalent (supported: {', '.join(_CROP_MODES)})")
    fields["crop_mode"] = mode
    for name in ("interpolation", "mean", "std"):
        if name in pretrained_cfg:
            value = pretrained_cfg[name]
            fields[name] = value if isinstance(value, str) else tuple(float(item) for item in value)
    return fields


def hub_class_names(config: Mapping[str, Any]) -> list[str] | None:
    """`label_descriptions` of `label_names` where every name has one, else the names, else None."""
    names = config.get("label_names")
    if not isinstance(names, list) or not names:
        return None
    descriptions = config.get("label_descriptions") or {}
    if all(name in descriptions for name in names):
        return [str(descriptions[name]) for name in names]
    return [str(name) for name in names]
