"""torchvision's `efficientnet_b0` .. `efficientnet_b7` (EfficientNet V1) -> effnet keys.

torchvision layout: `features.0` is the stem (conv `0`, BN `1`), `features.1` .. `features.7` the
stages, the last `features.N` the 1x1 head, `classifier.1` the linear layer (`classifier.0` is
dropout). A block `features.S.B.block.K` is a list of layers: with expansion K = 0 expand,
1 depthwise, 2 squeeze-excitation (fc1, fc2), 3 project; without expansion (stage 1) K = 0
depthwise, 1 squeeze-excitation, 2 project. Roles are read from each block's own layers, so
stage 1 needs no special case; the depthwise layer must have one input channel per group.

Peer quirks worth knowing: torchvision pads symmetrically (like effnet's non-`tf_` models) but
builds b5, b6 and b7 with BatchNorm eps 1e-3 and momentum 0.01 (b0..b4: eps 1e-5, momentum 0.1);
the keys cannot show this, so `matching` records it and `convert_checkpoint` applies it.
EfficientNetV2's fused blocks have no depthwise layer and are refused here.

torchvision's `resnet50` and `mobilenet_v2` share this source: their state dicts are recognised
by their keys and converted by `torchvision_classic` (into effnet's `resnet50`, `mobilenet_v2`).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from effnet.weights.converters import torchvision_classic
from effnet.weights.converters.common import BATCH_NORM_PATTERN, fail, rename

SOURCE = "torchvision"

_CONV_NORM = re.compile(rf"features\.(?P<index>\d+)\.(?:0\.weight|1\.(?P<field>{BATCH_NORM_PATTERN}))")
_LAYER = re.compile(rf"features\.(?P<stage>\d+)\.(?P<block>\d+)\.block\.(?P<layer>\d+)\."
                    rf"(?P<rest>0\.weight|1\.{BATCH_NORM_PATTERN}|fc[12]\.(?:weight|bias))")
_CLASSIFIER = re.compile(r"classifier\.1\.(?P<field>weight|bias)")

# (conv, BN) names in effnet for each role, and the roles of a block's convolutions in order.
_ROLE_NAMES = {"expand": ("conv_pw", "bn1"), "depthwise": ("conv_dw", "bn2"), "project": ("conv_pwl", "bn3")}
_ROLES_BY_COUNT = {3: ("expand", "depthwise", "project"), 2: ("depthwise", "project")}
_SQUEEZE_EXCITE = {"fc1": "se.conv_reduce", "fc2": "se.conv_expand"}


def _conv_norm_name(match: re.Match[str], conv: str, norm: str) -> str:
    return f"{norm}.{match['field']}" if match["field"] else f"{conv}.weight"


def _outside_blocks(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Stem (`features.0`), head (the last `features.N` that is a conv + BN) and classifier."""
    conv_norms = {key: match for key in state_dict if (match := _CONV_NORM.fullmatch(key))}
    last = max((int(match["index"]) for match in conv_norms.values()), default=0)
    new_names = {}
    for key, match in conv_norms.items():
        index = int(match["index"])
        if index == 0:
            new_names[key] = _conv_norm_name(match, "conv_stem", "bn1")
        elif index == last:
            new_names[key] = _conv_norm_name(match, "conv_head", "bn2")
    for key in state_dict:
        if match := _CLASSIFIER.fullmatch(key):
            new_names[key] = f"classifier.{match['field']}"
    return new_names


def _block_names(block: str, layers: dict[int, list[tuple[str, str]]],
                 state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """New names for one block's keys, its layers' roles told apart by their keys and shapes."""
    convs = sorted(index for index, entries in layers.items()
                   if not any(rest.startswith("fc") for _, rest in entries))
    roles = _ROLES_BY_COUNT.get(len(convs))
    keys = [key for entries in layers.values() for key, _ in entries]
    if roles is None:
        fail(SOURCE, f"block {block} has {len(convs)} convolution layer(s), an EfficientNet block "
             "has 2 (no expansion) or 3", keys, state_dict)
    role_of = dict(zip(convs, roles))
    depthwise = f"{block}.block.{convs[roles.index('depthwise')]}.0.weight"
    if depthwise in state_dict and state_dict[depthwise].shape[1] != 1:
        fail(SOURCE, f"block {block} has no depthwise convolution (fused block?)", [depthwise], state_dict)
    stage, index = block.split(".")[1:]
    target = f"blocks.{int(stage) - 1}.{index}"
    new_names = {}
    for layer, entries in layers.items():
        for key, rest in entries:
            part, field = rest.split(".", 1)
            if layer in role_of:
                conv, norm = _ROLE_NAMES[role_of[layer]]
                new_names[key] = f"{target}.{conv if part == '0' else norm}.{field}"
            elif part in _SQUEEZE_EXCITE:  # else a stray key in an SE layer: reported as unknown
                new_names[key] = f"{target}.{_SQUEEZE_EXCITE[part]}.{field}"
    return new_names


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision EfficientNet keys -> effnet keys; `features.S` becomes `blocks.{S-1}`.

    A ResNet or MobileNetV2 state dict goes to its own converter in `torchvision_classic`.
    """
    classic = torchvision_classic.layout_of(state_dict)
    if classic is not None:
        return classic(state_dict)
    new_names = _outside_blocks(state_dict)
    blocks: dict[str, dict[int, list[tuple[str, str]]]] = {}
    for key in state_dict:
        if match := _LAYER.fullmatch(key):
            block = f"features.{match['stage']}.{match['block']}"
            blocks.setdefault(block, {}).setdefault(int(match["layer"]), []).append((key, match["rest"]))
    for block, layers in blocks.items():
        if block.startswith("features.0."):
            continue  # the stem is no stage: left unnamed, reported as unknown
        new_names.update(_block_names(block, layers, state_dict))
    return rename(SOURCE, state_dict, new_names)
