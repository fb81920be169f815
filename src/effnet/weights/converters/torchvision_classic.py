"""torchvision's `resnet50` and `mobilenet_v2` -> effnet keys (the `resnet50`, `mobilenet_v2` specs).

Reached through `convert_state_dict(state_dict, "torchvision")`: the torchvision converter hands a
state dict here when `layout_of` recognises one of these layouts by its keys (EfficientNet's
blocks are `features.S.B.block.K`, MobileNetV2's `features.I.conv.K`, ResNet's `layerL.B`).

ResNet: `conv1`/`bn1` is the stem, `layerL.B.{conv,bn}{1,2,3}` the bottlenecks (the same names
in effnet, under `blocks.{L-1}.B`), `downsample.0`/`.1` the projection shortcut (`conv_shortcut`,
`bn_shortcut`), `fc` the classifier. BasicBlock ResNets (18, 34) have no `conv3` and are refused.

MobileNetV2: `features.0` the stem, `features.1` .. `features.17` a flat list of inverted
residuals, the last `features.N` the 1x1 head, `classifier.1` the linear layer. A block's layers
are `conv.0` (expand conv + BN), `conv.1` (depthwise conv + BN), `conv.2` (project conv),
`conv.3` (BN); without expansion (the first block) `conv.0` is the depthwise, `conv.1` the
project conv, `conv.2` its BN. Blocks are placed into stages by MobileNetV2's repeats (1, 2, 3,
4, 3, 3, 1), which torchvision's `width_mult` leaves alone; channel counts cannot tell stages
apart at small widths, where neighbouring stages round to the same width.

Peer quirks: both pad symmetrically with BN eps 1e-5 and momentum 0.1, effnet's defaults.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import torch

from effnet.spec.classic import MOBILENET_V2
from effnet.weights.converters.common import BATCH_NORM_PATTERN, fail, rename

SOURCE = "torchvision"

# --- ResNet ----------------------------------------------------------------------------------

_RESNET_STEM = re.compile(rf"conv1\.weight|bn1\.{BATCH_NORM_PATTERN}")
_RESNET_BLOCK = re.compile(rf"layer(?P<stage>\d+)\.(?P<block>\d+)\.(?P<layer>conv[123]\.weight|bn[123]\."
                           rf"{BATCH_NORM_PATTERN}|downsample\.0\.weight|downsample\.1\.{BATCH_NORM_PATTERN})")
_RESNET_FC = re.compile(r"fc\.(?P<field>weight|bias)")
_SHORTCUT = {"downsample.0": "conv_shortcut", "downsample.1": "bn_shortcut"}


def convert_resnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet (bottleneck) keys -> effnet keys; `layerL` becomes `blocks.{L-1}`."""
    new_names, blocks = {}, set()
    for key in state_dict:
        if _RESNET_STEM.fullmatch(key):
            new_names[key] = "conv_stem.weight" if key == "conv1.weight" else key
        elif match := _RESNET_FC.fullmatch(key):
            new_names[key] = f"classifier.{match['field']}"
        elif (match := _RESNET_BLOCK.fullmatch(key)) and int(match["stage"]) > 0:
            layer, _, field = match["layer"].rpartition(".")  # ("downsample.1", "running_mean")
            new_names[key] = f"blocks.{int(match['stage']) - 1}.{match['block']}.{_SHORTCUT.get(layer, layer)}.{field}"
            blocks.add(f"layer{match['stage']}.{match['block']}")
    for block in sorted(blocks):
        if f"{block}.conv3.weight" not in state_dict:
            keys = [key for key in state_dict if key.startswith(f"{block}.")]
            fail(SOURCE, f"block {block} has no conv3: a BasicBlock ResNet (18, 34), which effnet "
                 "does not build", keys, state_dict, "ResNet")
    return rename(SOURCE, state_dict, new_names, "ResNet")


# --- MobileNetV2 -----------------------------------------------------------------------------

_MOBILENET_CONV_NORM = re.compile(rf"features\.(?P<index>\d+)\.(?:0\.weight|1\.(?P<field>{BATCH_NORM_PATTERN}))")
_MOBILENET_BLOCK = re.compile(rf"features\.(?P<index>\d+)\.conv\.(?P<layer>\d+(?:\.\d+)?)\."
                              rf"(?P<field>{BATCH_NORM_PATTERN})")
_MOBILENET_CLASSIFIER = re.compile(r"classifier\.1\.(?P<field>weight|bias)")
# torchvision layer -> (effnet layer, whether it is a convolution), with and without expansion.
_EXPANDED = {"0.0": ("conv_pw", True), "0.1": ("bn1", False), "1.0": ("conv_dw", True),
             "1.1": ("bn2", False), "2": ("conv_pwl", True), "3": ("bn3", False)}
_UNEXPANDED = {"0.0": ("conv_dw", True), "0.1": ("bn2", False), "1": ("conv_pwl", True), "2": ("bn3", False)}


def _mobilenet_positions(indices: list[int], state_dict: Mapping[str, torch.Tensor]) -> dict[int, str]:
    """`features.I` -> `blocks.S.B` by MobileNetV2's repeats per stage."""
    repeats = [stage.repeats for stage in MOBILENET_V2.stages]
    if indices != list(range(1, sum(repeats) + 1)):
        keys = [key for key in state_dict if _MOBILENET_BLOCK.fullmatch(key)]
        fail(SOURCE, f"expected inverted residual blocks features.1 .. features.{sum(repeats)}, found "
             f"{len(indices)} from features.{indices[0]} to features.{indices[-1]}", keys, state_dict,
             "MobileNetV2")
    positions, index = {}, 1
    for stage, count in enumerate(repeats):
        for block in range(count):
            positions[index] = f"blocks.{stage}.{block}"
            index += 1
    return positions


def convert_mobilenet_v2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision MobileNetV2 keys -> effnet keys; the flat `features` list is split into stages."""
    new_names: dict[str, str] = {}
    conv_norms = {key: match for key in state_dict if (match := _MOBILENET_CONV_NORM.fullmatch(key))}
    head = max((int(match["index"]) for match in conv_norms.values()), default=0)
    for key, match in conv_norms.items():
        conv, norm = {0: ("conv_stem", "bn1"), head: ("conv_head", "bn2")}.get(int(match["index"]), (None, None))
        if conv is not None:  # else a conv + BN in the middle: reported as unknown
            new_names[key] = f"{norm}.{match['field']}" if match["field"] else f"{conv}.weight"
    for key in state_dict:
        if match := _MOBILENET_CLASSIFIER.fullmatch(key):
            new_names[key] = f"classifier.{match['field']}"
    matches = [match for key in state_dict if (match := _MOBILENET_BLOCK.fullmatch(key))]
    indices = sorted({int(match["index"]) for match in matches})
    positions = _mobilenet_positions(indices, state_dict) if indices else {}
    for match in matches:
        expands = f"features.{match['index']}.conv.3.running_mean" in state_dict
        layer, is_conv = (_EXPANDED if expands else _UNEXPANDED).get(match["layer"], (None, False))
        if layer is not None and (match["field"] == "weight" or not is_conv):
            new_names[match.string] = f"{positions[int(match['index'])]}.{layer}.{match['field']}"
    return rename(SOURCE, state_dict, new_names, "MobileNetV2")


# --- dispatch --------------------------------------------------------------------------------

Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]

# A key only each layout has: ResNet's residual stages, MobileNetV2's `conv` inside `features`.
_LAYOUTS: tuple[tuple[re.Pattern[str], Converter], ...] = (
    (re.compile(r"layer\d+\.\d+\..*"), convert_resnet),
    (re.compile(r"features\.\d+\.conv\..*"), convert_mobilenet_v2),
)


def layout_of(state_dict: Mapping[str, torch.Tensor]) -> Converter | None:
    """The converter for a torchvision ResNet or MobileNetV2 state dict, or None for any other."""
    for pattern, converter in _LAYOUTS:
        if any(pattern.fullmatch(key) for key in state_dict):
            return converter
    return None
