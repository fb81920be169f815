"""Hugging Face transformers' `EfficientNetModel` / `EfficientNetForImageClassification` -> effnet keys.

Its layout is flat like EfficientNet-PyTorch's: `embeddings.convolution`/`batchnorm` is the stem,
`encoder.blocks.0` .. `encoder.blocks.N-1` (no stage level) the blocks, `encoder.top_conv`/
`top_bn` the head, `classifier` the linear layer; the classification model prefixes the trunk
with `efficientnet.`. Inside a block: `expansion.expand_conv`/`expand_bn` (absent when the expand
ratio is 1), `depthwise_conv.depthwise_conv`/`depthwise_norm`, `squeeze_excite.reduce`/`expand`,
`projection.project_conv`/`project_bn`. Stages are recovered as in `common.stage_positions`.

Peer quirks worth knowing (transformers' modeling_efficientnet.py):
- TensorFlow numerics (BN eps 1e-3 and TF-style padding), so its models match effnet's `tf_`
  twins. Its padding is *static*: the stem always pads (0, 1, 0, 1) and each stride-2 depthwise
  conv pads by `correct_pad`, asymmetric unless the block is listed in `config.depthwise_padding`
  (the blocks whose input is odd at `config.image_size`). That equals TF "same" padding, and
  effnet's, on inputs of the configured size (and any size with the same parities); on others
  effnet pads as TensorFlow would and transformers does not.
- BN momentum is passed as 0.99 to PyTorch (meaning 0.01 in TF terms): wrong for training, no
  effect on inference. Its pooler is `AvgPool2d(hidden_dim, ceil_mode=True)`, a global mean.
- The residual is added in every block but the first of a stage (`id_skip`), which for every
  EfficientNet is where effnet adds it too (stride 1 and equal channels).
- `EfficientNetImageProcessor` squashes the image to `size` (no aspect ratio kept), centre-crops
  only if `do_center_crop`, maps PIL's NEAREST to torchvision's NEAREST_EXACT, and with
  `include_top` divides by `image_std` a second time; the published google/efficientnet-b*
  processors store the square root of ImageNet's std, so the two divisions give ImageNet's std.
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping

import torch

from effnet.errors import WeightsError
from effnet.weights.converters.common import BATCH_NORM_PATTERN, flat_block_names, flat_block_positions, rename

SOURCE = "transformers"

_OUTSIDE_BLOCKS = {"embeddings.convolution": "conv_stem", "embeddings.batchnorm": "bn1",
                   "encoder.top_conv": "conv_head", "encoder.top_bn": "bn2"}
_BLOCK_LAYERS = {"expansion.expand_conv": "conv_pw", "expansion.expand_bn": "bn1",
                 "depthwise_conv.depthwise_conv": "conv_dw", "depthwise_conv.depthwise_norm": "bn2",
                 "squeeze_excite.reduce": "se.conv_reduce", "squeeze_excite.expand": "se.conv_expand",
                 "projection.project_conv": "conv_pwl", "projection.project_bn": "bn3"}
_KEY = re.compile(rf"(?:efficientnet\.)?(?:encoder\.blocks\.(?P<block>\d+)\.)?(?P<layer>[a-z_]+\.[a-z_]+)"
                  rf"\.(?P<field>{BATCH_NORM_PATTERN})")
_CLASSIFIER = re.compile(r"classifier\.(?P<field>weight|bias)")


def _fits(layer: str, field: str) -> bool:
    """BatchNorms carry five entries, SE convolutions a bias too, other convolutions a weight."""
    if layer.endswith(("_bn", "_norm", "batchnorm")):
        return True
    return field in (("weight", "bias") if layer.startswith("squeeze_excite.") else ("weight",))


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers EfficientNet keys (with or without `efficientnet.`) -> effnet keys."""
    matches = [match for key in state_dict
               if (match := _KEY.fullmatch(key)) and _fits(match["layer"], match["field"])]
    blocks = sorted({int(match["block"]) for match in matches if match["block"] is not None})
    prefix = "efficientnet.encoder.blocks.{}." if any(key.startswith("efficientnet.") for key in state_dict) \
        else "encoder.blocks.{}."
    positions = flat_block_positions(SOURCE, state_dict, blocks, prefix, "projection.project_conv.weight",
                                     "depthwise_conv.depthwise_conv.weight",
                                     "expansion.expand_conv.weight") if blocks else {}
    new_names = flat_block_names(matches, positions, _OUTSIDE_BLOCKS, _BLOCK_LAYERS)
    for key in state_dict:
        if match := _CLASSIFIER.fullmatch(key):
            new_names[key] = f"classifier.{match['field']}"
    return rename(SOURCE, state_dict, new_names)


# --- config.json ------------------------------------------------------------------------------

# Settings an effnet model cannot follow: they change the function without changing any shape.
_REQUIRED = {"hidden_act": ("swish", "silu"), "pooling_type": ("mean",), "num_channels": (3,)}


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse an `EfficientNetConfig` whose activation or pooling effnet does not build."""
    if config.get("model_type", "efficientnet") != "efficientnet":
        raise WeightsError(f"config.json describes a {config.get('model_type')!r} model, not EfficientNet")
    for name, allowed in _REQUIRED.items():
        if name in config and config[name] not in allowed:
            raise WeightsError(f"transformers config {name}={config[name]!r} has no effnet equivalent "
                               f"(effnet builds {name}={allowed[0]!r})")


def class_names(config: Mapping[str, Any]) -> list[str] | None:
    """`id2label` in index order, or None when absent or transformers' placeholders `LABEL_i`."""
    labels = config.get("id2label") or {}
    try:
        ordered = [labels[key] for key in sorted(labels, key=int)]
    except ValueError:
        return None
    if not ordered or ordered == [f"LABEL_{index}" for index in range(len(ordered))]:
        return None
    return [str(name) for name in ordered]


# --- preprocessor_config.json ------------------------------------------------------------------

# `EfficientNetImageProcessor`'s class defaults (transformers 5), under a preprocessor_config.json's
# values exactly as `from_pretrained` applies them; tests check them against the installed class.
PROCESSOR_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "do_resize": True, "size": {"height": 346, "width": 346}, "resample": 3,
    "do_center_crop": False, "crop_size": {"height": 289, "width": 289},
    "do_rescale": True, "rescale_factor": 1 / 255, "rescale_offset": False,
    "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "include_top": True,
})
# PIL resampling codes -> effnet interpolation names, as transformers' torchvision backend maps them.
_RESAMPLE = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def _channels(value: Any) -> list[float]:
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(item) for item in value]


def _geometry(settings: Mapping[str, Any]) -> dict[str, Any]:
    """input_size, crop_pct and crop_mode of the processor's resize (and optional centre crop)."""
    size, crop = settings["size"], settings["crop_size"]
    if not settings["do_resize"]:
        raise WeightsError("preprocessor do_resize=false (no resize) has no effnet equivalent")
    if "height" in size and "width" in size:  # squash to (height, width)
        resized, mode = (int(size["height"]), int(size["width"])), "squash"
    elif "shortest_edge" in size and settings["do_center_crop"]:
        resized, mode = (int(size["shortest_edge"]),) * 2, "center"
    else:
        raise WeightsError(f"preprocessor size {dict(size)} has no effnet equivalent")
    if not settings["do_center_crop"]:
        return {"input_size": (3, *resized), "crop_pct": 1.0, "crop_mode": mode}
    cropped = (int(crop["height"]), int(crop["width"]))
    if cropped[0] * resized[1] != cropped[1] * resized[0] or cropped[0] > resized[0]:
        raise WeightsError(f"preprocessor crop {cropped} of a resize to {resized} has no effnet equivalent")
    return {"input_size": (3, *cropped), "crop_pct": cropped[0] / resized[0], "crop_mode": mode}


def preprocessing(processor: Mapping[str, Any] | None) -> dict[str, Any]:
    """DataConfig fields reproducing `EfficientNetImageProcessor` with `processor` (None: its defaults).

    On pixels u in [0, 1] it computes ((a·u − offset − mean) / std) / std_top, where a = 255 ·
    rescale_factor (255 without rescaling), offset is 1 with `rescale_offset`, mean and std apply
    with `do_normalize` and std_top = std with `include_top`; that is effnet's (u − m') / s' with
    m' = (offset + mean) / a and s' = std · std_top / a.
    """
    settings = {**PROCESSOR_DEFAULTS, **(processor or {})}
    resample = settings["resample"]
    if resample not in _RESAMPLE:
        raise WeightsError(f"preprocessor resample={resample!r} has no effnet equivalent "
                           f"(supported: {', '.join(f'{code} ({name})' for code, name in _RESAMPLE.items())})")
    scale = 255.0 * float(settings["rescale_factor"]) if settings["do_rescale"] else 255.0
    offset = 1.0 if settings["do_rescale"] and settings["rescale_offset"] else 0.0
    mean = _channels(settings["image_mean"]) if settings["do_normalize"] else [0.0] * 3
    std = _channels(settings["image_std"]) if settings["do_normalize"] else [1.0] * 3
    top = _channels(settings["image_std"]) if settings["include_top"] else [1.0] * 3
    return {
        **_geometry(settings),
        "interpolation": _RESAMPLE[resample],
        "mean": tuple((offset + m) / scale for m in mean),
        "std": tuple(s * t / scale for s, t in zip(std, top)),
    }
