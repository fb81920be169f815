"""EfficientNet-PyTorch (lukemelas, `pip install efficientnet_pytorch`) -> effnet keys.

Its layout is flat: `_conv_stem`, `_bn0`, then `_blocks.0` .. `_blocks.N-1` with no stage level,
then `_conv_head`, `_bn1`, `_fc`. Inside a block: `_expand_conv`/`_bn0` (absent when the expand
ratio is 1), `_depthwise_conv`/`_bn1`, `_se_reduce`/`_se_expand`, `_project_conv`/`_bn2`.

Stages are recovered from the weights by `common.stage_positions`: blocks in a stage share their
output channels, kernel size and whether they expand.

Peer quirks worth knowing: its models are TensorFlow ports ("same" padding, BN eps 1e-3,
momentum 0.01), so they match effnet's `tf_` twins, not the plain names. Its "same" padding is
*static* by default: computed once at construction for `image_size` (the variant's resolution
unless overridden), and silently wrong for inputs of another size whenever a strided layer meets
an odd height or width; effnet's "same" padding follows each input's own size, which equals the
peer built with `image_size` set to that input size (or `image_size=None`).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from effnet.weights.converters.common import BATCH_NORM_PATTERN, flat_block_names, flat_block_positions, rename

SOURCE = "efficientnet_pytorch"

_OUTSIDE_BLOCKS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                   "_fc": "classifier"}
_BLOCK_LAYERS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                 "_bn2": "bn3"}
_WITH_BIAS = ("_se_reduce", "_se_expand", "_fc")

_KEY = re.compile(rf"(?:_blocks\.(?P<block>\d+)\.)?(?P<layer>_[a-z_]+[0-9]?)\.(?P<field>{BATCH_NORM_PATTERN})")


def _fits(layer: str, field: str) -> bool:
    """BatchNorms carry five entries, SE convolutions and `_fc` a bias, other convolutions a weight."""
    if layer.startswith("_bn"):
        return True
    return field in (("weight", "bias") if layer in _WITH_BIAS else ("weight",))


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas EfficientNet keys -> effnet keys; the flat block list is split into stages."""
    matches = [match for key in state_dict
               if (match := _KEY.fullmatch(key)) and _fits(match["layer"], match["field"])]
    blocks = sorted({int(match["block"]) for match in matches if match["block"] is not None})
    positions = flat_block_positions(SOURCE, state_dict, blocks, "_blocks.{}.", "_project_conv.weight",
                                     "_depthwise_conv.weight", "_expand_conv.weight") if blocks else {}
    new_names = flat_block_names(matches, positions, _OUTSIDE_BLOCKS, _BLOCK_LAYERS)
    return rename(SOURCE, state_dict, new_names)
