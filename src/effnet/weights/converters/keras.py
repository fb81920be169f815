"""Keras applications' `EfficientNetB0` .. `B7` -> effnet keys and PyTorch tensor layouts.

The state dict here is what `effnet.weights.keras_h5` reads from a Keras file: `layer/variable`
-> tensor in Keras' layouts. Two naming schemes reach it:
- the application's own layer names (legacy `.h5` of Keras 2 and 3): `stem_conv`, `stem_bn`,
  `block{S}{a,b,..}_{expand_conv,expand_bn,dwconv,bn,se_reduce,se_expand,project_conv,project_bn}`,
  `top_conv`, `top_bn`, `predictions`, and the input `normalization` layer;
- Keras 3's `.weights.h5`, which names layers by class and creation order (`conv2d`, `conv2d_1`,
  `depthwise_conv2d`, `batch_normalization_7`, `dense`); these are given the application's names
  by walking EfficientNet's structure: per block an optional expansion conv (a 1x1 conv into the
  depthwise conv's channels), the depthwise conv, the SE convs (the convs with a bias), the
  project conv, each followed by its BatchNorm in BatchNorm order.
Layouts: conv kernels HWIO -> OIHW, depthwise kernels (H, W, C, 1) -> (C, 1, H, W), the dense
kernel (in, out) -> (out, in); BN gamma/beta/moving_mean/moving_variance -> weight/bias/running_*.

Peer quirks worth knowing (keras/src/applications/efficientnet.py): TensorFlow numerics (BN eps
1e-3; stride-2 layers pad by `correct_pad` for the input size the model was built for, that is TF
"same" padding, so effnet's `tf_` twins match; built for any size (None) it assumes even sizes).
The model normalises its own input (0..255 pixels): `Rescaling(1/255)`, then a `Normalization`
layer, (x - mean) / sqrt(variance), whose mean and variance are stored with the weights. The
published ImageNet weights store ImageNet's *std* as that variance (tensorflow#49930), and
`EfficientNetB0(weights="imagenet")` divides by sqrt(std) once more, so the net effect is ImageNet's
mean and std; `preprocessing` therefore reads a variance equal to ImageNet's std as that std, and
any other variance as what it is. Those become the effnet data config's mean and std (effnet
models take normalised input), not weights.
"""
from __future__ import annotations

import math
import re
from collections import deque
from typing import Any, Mapping

import torch

from effnet.errors import WeightsError
from effnet.spec.data import IMAGENET_STD
from effnet.weights.converters.common import fail, rename, stage_positions

SOURCE = "keras"

_OUTSIDE_BLOCKS = {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2",
                   "predictions": "classifier"}
_BLOCK_LAYERS = {"expand_conv": "conv_pw", "expand_bn": "bn1", "dwconv": "conv_dw", "bn": "bn2",
                 "se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand", "project_conv": "conv_pwl",
                 "project_bn": "bn3"}
_BATCH_NORM = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_KERNEL = {"kernel": "weight", "depthwise_kernel": "weight"}  # Keras 2 names the depthwise one apart
_WITH_BIAS = ("se_reduce", "se_expand", "predictions")

_KEY = re.compile(r"(?:block(?P<stage>\d+)(?P<letter>[a-z])_)?(?P<layer>[a-z_]+)/(?P<variable>[a-z_]+)")
_NORMALIZATION = re.compile(r"(?P<layer>normalization(?:_\d+)?)/(?:mean|variance|count)")
_POSITIONAL = re.compile(r"(?P<kind>depthwise_conv2d|conv2d|batch_normalization|dense)(?:_(?P<number>\d+))?")


def _field(layer: str, variable: str) -> str | None:
    """The effnet field of a Keras variable, or None when that layer has no such variable."""
    if layer.endswith(("_bn", "bn")):
        return _BATCH_NORM.get(variable)
    if variable == "bias":
        return "bias" if layer in _WITH_BIAS else None
    return _KERNEL.get(variable)


def _to_torch_layout(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Keras HWIO / (H, W, C, 1) / (in, out) kernels -> PyTorch OIHW / (C, 1, H, W) / (out, in)."""
    if key == "classifier.weight" and tensor.dim() == 2:
        return tensor.t().contiguous()
    if key.endswith("conv_dw.weight") and tensor.dim() == 4:
        height, width, channels, multiplier = tensor.shape
        return tensor.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width).contiguous()
    if key.endswith(".weight") and tensor.dim() == 4:
        return tensor.permute(3, 2, 0, 1).contiguous()
    return tensor


# --- Keras 3 `.weights.h5`: layers named by class and creation order ---------------------------

def _layers_by_kind(state_dict: Mapping[str, torch.Tensor]) -> dict[str, deque[str]]:
    numbered: dict[str, dict[int, str]] = {}
    for key in state_dict:
        layer = key.split("/")[0]
        if match := _POSITIONAL.fullmatch(layer):
            numbered.setdefault(match["kind"], {})[int(match["number"] or 0)] = layer
    return {kind: deque(layers[number] for number in sorted(layers)) for kind, layers in numbered.items()}


def _pop(queue: deque[str], role: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    if not queue:
        fail(SOURCE, f"ran out of layers for {role} while walking EfficientNet's structure",
             list(state_dict), state_dict)
    return queue.popleft()


def _walk_block(depthwise: str, convs: deque[str], norms: deque[str],
                state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """One block's roles -> positional layer names, taking its convs and BNs off the queues."""
    channels = state_dict[f"{depthwise}/kernel"].shape[2]
    layers = {}
    following = state_dict.get(f"{convs[0]}/kernel") if convs else None
    if following is not None and following.shape[3] == channels and following.shape[2] != channels:
        layers["expand_conv"] = _pop(convs, "expand_conv", state_dict)
        layers["expand_bn"] = _pop(norms, "expand_bn", state_dict)
    layers["dwconv"] = depthwise
    layers["bn"] = _pop(norms, "bn", state_dict)
    if convs and f"{convs[0]}/bias" in state_dict:
        layers["se_reduce"] = _pop(convs, "se_reduce", state_dict)
        layers["se_expand"] = _pop(convs, "se_expand", state_dict)
    layers["project_conv"] = _pop(convs, "project_conv", state_dict)
    layers["project_bn"] = _pop(norms, "project_bn", state_dict)
    return layers


def _application_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keras 3 positional layer names -> the application's names (unplaced layers keep theirs)."""
    by_kind = _layers_by_kind(state_dict)
    convs, norms = by_kind.get("conv2d", deque()), by_kind.get("batch_normalization", deque())
    names = {_pop(convs, "stem_conv", state_dict): "stem_conv", _pop(norms, "stem_bn", state_dict): "stem_bn"}
    blocks, kinds = [], []
    for depthwise in by_kind.get("depthwise_conv2d", ()):
        layers = _walk_block(depthwise, convs, norms, state_dict)
        project = state_dict[f"{layers['project_conv']}/kernel"]
        kinds.append((project.shape[3], tuple(state_dict[f"{depthwise}/kernel"].shape[:2]), "expand_conv" in layers))
        blocks.append(layers)
    for position, layers in zip(stage_positions(kinds), blocks):
        _, stage, index = position.split(".")
        names.update({layer: f"block{int(stage) + 1}{chr(97 + int(index))}_{role}" for role, layer in layers.items()})
    names[_pop(convs, "top_conv", state_dict)] = "top_conv"
    names[_pop(norms, "top_bn", state_dict)] = "top_bn"
    if by_kind.get("dense"):
        names[by_kind["dense"].popleft()] = "predictions"
    renamed = {}
    for key, tensor in state_dict.items():
        layer, _, variable = key.partition("/")
        renamed[f"{names.get(layer, layer)}/{variable}"] = tensor
    return renamed


# --- conversion -------------------------------------------------------------------------------

def _is_positional(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(_POSITIONAL.fullmatch(key.split("/")[0]) for key in state_dict)


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keras EfficientNet `layer/variable` tensors -> effnet keys and layouts.

    The input `normalization` layer's mean and variance are preprocessing, not weights: they are
    left out here and read by `preprocessing`.
    """
    if not any("/" in key for key in state_dict):
        fail(SOURCE, "no Keras `layer/variable` names", list(state_dict), state_dict)
    weights = {key: value for key, value in state_dict.items() if not _NORMALIZATION.fullmatch(key)}
    if _is_positional(weights):
        weights = _application_names(weights)
    new_names = {}
    for key in weights:
        match = _KEY.fullmatch(key)
        if match is None or (field := _field(match["layer"], match["variable"])) is None:
            continue  # reported as unknown by `rename`
        if match["stage"] is None and match["layer"] in _OUTSIDE_BLOCKS:
            new_names[key] = f"{_OUTSIDE_BLOCKS[match['layer']]}.{field}"
        elif match["stage"] is not None and match["layer"] in _BLOCK_LAYERS and int(match["stage"]) > 0:
            position = f"blocks.{int(match['stage']) - 1}.{ord(match['letter']) - ord('a')}"
            new_names[key] = f"{position}.{_BLOCK_LAYERS[match['layer']]}.{field}"
    converted = rename(SOURCE, weights, new_names)
    return {key: _to_torch_layout(key, tensor) for key, tensor in converted.items()}


def preprocessing(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Mean and std of the model's input `Normalization` layer (see the module notes); {} without one."""
    layers = sorted({match["layer"] for key in state_dict if (match := _NORMALIZATION.fullmatch(key))})
    if not layers:
        return {}
    if len(layers) > 1:
        raise WeightsError(f"Keras weights hold {len(layers)} Normalization layers ({', '.join(layers)}); "
                           "an EfficientNet application has one")
    mean = state_dict[f"{layers[0]}/mean"].reshape(-1).double()
    variance = state_dict[f"{layers[0]}/variance"].reshape(-1).double()
    if mean.numel() != 3 or variance.numel() != 3:
        raise WeightsError(f"Keras Normalization layer {layers[0]} has {mean.numel()} channels, expected 3")
    if torch.allclose(variance, torch.tensor(IMAGENET_STD, dtype=torch.double), rtol=0, atol=1e-6):
        std = tuple(IMAGENET_STD)  # the published weights' quirk: this "variance" is ImageNet's std
    else:
        std = tuple(math.sqrt(max(float(value), 0.0)) for value in variance)
    return {"mean": tuple(float(value) for value in mean), "std": std}
