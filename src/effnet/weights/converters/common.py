"""Helpers shared by the converters: key patterns, error messages, collision-free renaming."""
from __future__ import annotations

import re
from typing import Hashable, Iterable, Mapping, NoReturn, Sequence

import torch

from effnet.errors import WeightsError

# Every BatchNorm2d entry in a state dict; `num_batches_tracked` may be absent (see below).
BATCH_NORM_FIELDS: tuple[str, ...] = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BATCH_NORM_PATTERN = "(?:" + "|".join(BATCH_NORM_FIELDS) + ")"

_SHOW = 5


def describe(keys: Iterable[str], state_dict: Mapping[str, torch.Tensor]) -> str:
    """The first few keys with their shapes, e.g. `features.0.0.weight (32, 3, 3, 3) and 4 more`."""
    keys = list(keys)
    shown = ", ".join(f"{key} {tuple(state_dict[key].shape)}" for key in keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def fail(source: str, problem: str, keys: Iterable[str], state_dict: Mapping[str, torch.Tensor],
         layout: str = "EfficientNet") -> NoReturn:
    """Raise the one error every converter gives: what is wrong, and the first keys it concerns."""
    raise WeightsError(f"state dict does not have {source}'s {layout} layout: {problem}: "
                      f"{describe(keys, state_dict)}")


def reject_unknown(source: str, state_dict: Mapping[str, torch.Tensor], known: Iterable[str],
                   layout: str = "EfficientNet") -> None:
    """Raise unless every key of `state_dict` is in `known`: nothing is ever dropped silently."""
    if not state_dict:
        raise WeightsError(f"state dict does not have {source}'s {layout} layout: it is empty")
    known = set(known)
    unknown = [key for key in state_dict if key not in known]
    if unknown:
        fail(source, f"{len(unknown)} key(s) outside that layout", unknown, state_dict, layout)


def rename(source: str, state_dict: Mapping[str, torch.Tensor],
           new_names: Mapping[str, str], layout: str = "EfficientNet") -> dict[str, torch.Tensor]:
    """`state_dict` under `new_names` (old -> new), which must cover every key.

    Refuses keys that `new_names` lacks (a state dict of another source or architecture) and two
    old keys landing on one new key, so a wrong source never yields a partial result.
    """
    reject_unknown(source, state_dict, new_names, layout)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for old, new in new_names.items():
        if new in converted:
            fail(source, f"{origin[new]} and {old} both map to {new}", [origin[new], old], state_dict, layout)
        converted[new] = state_dict[old]
        origin[new] = old
    return complete_batch_norm(converted)


def complete_batch_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add `num_batches_tracked` (0) to every BatchNorm that lacks it, in place, and return it.

    Checkpoints ported from TensorFlow or saved by some exporters omit this counter; it only
    matters for BN with momentum=None, so a zero keeps strict loading possible without loss.
    """
    for key in [key for key in state_dict if key.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        state_dict.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return state_dict


def flat_block_names(matches: Iterable["re.Match[str]"], positions: Mapping[int, str],
                     outside_blocks: Mapping[str, str], block_layers: Mapping[str, str]) -> dict[str, str]:
    """old -> new key names for a flat-block layout, from key matches with `block`, `layer` and
    `field` groups: layers outside the blocks by `outside_blocks`, block layers at their block's
    effnet position (`positions`, see `flat_block_positions`) by `block_layers`."""
    new_names = {}
    for match in matches:
        if match["block"] is None and match["layer"] in outside_blocks:
            new_names[match.string] = f"{outside_blocks[match['layer']]}.{match['field']}"
        elif match["block"] is not None and match["layer"] in block_layers:
            position = positions[int(match["block"])]
            new_names[match.string] = f"{position}.{block_layers[match['layer']]}.{match['field']}"
    return new_names


def stage_positions(kinds: Sequence[Hashable]) -> list[str]:
    """Effnet positions `blocks.S.B` of a flat block list, a new stage wherever a block's kind changes.

    For layouts that number blocks without stages (EfficientNet-PyTorch, transformers, Keras 3's
    `.weights.h5`). A block's kind is (output channels, depthwise kernel, whether it expands): equal
    within a stage, and every EfficientNet stage differs from the previous one in its output
    channels. Strides are not stored, so two adjacent stages alike in all three would merge; the
    strict load that follows then fails naming the keys, never loads them wrongly.
    """
    positions, previous, stage, index = [], None, -1, 0
    for kind in kinds:
        stage, index = (stage + 1, 0) if kind != previous else (stage, index + 1)
        positions.append(f"blocks.{stage}.{index}")
        previous = kind
    return positions


def flat_block_positions(source: str, state_dict: Mapping[str, torch.Tensor], blocks: Sequence[int],
                         prefix: str, project: str, depthwise: str, expand: str) -> dict[int, str]:
    """Flat block number -> `blocks.S.B` for layouts whose block `i` keys start with `prefix.format(i)`.

    `project`, `depthwise` and `expand` are the keys (after the prefix) of a block's project and
    depthwise convolution weights and of its expansion convolution weight (absent: no expansion).
    A gap in the numbering or a block without its convolutions is refused, naming the keys.
    """
    blocks = sorted(blocks)
    missing = sorted(set(range(blocks[-1] + 1)) - set(blocks))
    if missing:
        after = min(block for block in blocks if block > missing[0])
        fail(source, f"block {prefix.format(missing[0])[:-1]} is absent, so later blocks cannot be placed",
             [key for key in state_dict if key.startswith(prefix.format(after))], state_dict)
    kinds = []
    for block in blocks:
        start = prefix.format(block)
        project_weight = state_dict.get(start + project)
        depthwise_weight = state_dict.get(start + depthwise)
        if project_weight is None or depthwise_weight is None:
            keys = [key for key in state_dict if key.startswith(start)]
            fail(source, f"block {start[:-1]} lacks its depthwise or project convolution", keys, state_dict)
        kinds.append((project_weight.shape[0], tuple(depthwise_weight.shape[2:]), start + expand in state_dict))
    return dict(zip(blocks, stage_positions(kinds)))
