"""Telling a checkpoint's source from its keys and its effnet model from its shapes.

The source: the one converter that accepts every key (their layouts are disjoint). The model:
the rows of `converters.matching` for that source whose effnet model has exactly the converted
keys and shapes: an outline from the spec's plan (stem and head widths, blocks per stage) picks the
candidates, whose full shapes are read from models built on PyTorch's meta device (no memory, no
initialisation), once per model. Shapes fix the width, depth and head, never the numerics: timm's
`efficientnet_b0` and `tf_efficientnet_b0` are alike key for key, so a tie is broken by the model
the peer's files name (`architecture`), then by a peer model name inside the file name (timm's
release files are called `tf_efficientnet_b0_aa-827b6e33.pth`), else refused.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Mapping

import torch

from effnet.errors import WeightsError
from effnet.weights.converters import CONVERTERS
from effnet.weights.converters.common import describe
from effnet.weights.converters.matching import PEER_MATCHES, PeerMatch

Outline = tuple[int, int, tuple[int, ...]]  # stem width, head width (0: none), blocks per stage
_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\..*")


def accepting_sources(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Every source whose converter accepts all of `state_dict`'s keys."""
    sources = []
    for source, converter in CONVERTERS.items():
        try:
            converter(state_dict)
        except WeightsError:
            continue
        sources.append(source)
    return sources


def detect_source(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The source whose layout `state_dict` has, or WeightsError naming its first keys."""
    sources = accepting_sources(state_dict)
    if len(sources) != 1:
        found = "fits several layouts" if sources else "has no known layout"
        raise WeightsError(f"the checkpoint {found} (known: {', '.join(CONVERTERS)}): "
                           f"{describe(state_dict, state_dict)}; pass --from SOURCE")
    return sources[0]


@functools.lru_cache(maxsize=None)
def _model_outline(model_name: str) -> Outline:
    from effnet.models.registry import get_entry
    from effnet.scaling.plan import resolve

    plan = resolve(get_entry(model_name).spec)
    return plan.stem_channels, plan.head_channels, tuple(len(stage) for stage in plan.stages)


def _outline(shapes: Mapping[str, tuple]) -> Outline:
    stem, head = shapes.get("conv_stem.weight", (0,)), shapes.get("conv_head.weight", (0,))
    blocks: dict[int, set[int]] = {}
    for key in shapes:
        if match := _BLOCK.fullmatch(key):
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    return stem[0], head[0], tuple(len(blocks[stage]) for stage in sorted(blocks))


@functools.lru_cache(maxsize=None)
def _shapes(model_name: str, overrides: tuple[tuple[str, object], ...], num_classes: int) -> dict[str, tuple]:
    from effnet.models import create_model

    with torch.device("meta"):
        model = create_model(model_name, num_classes=num_classes, **dict(overrides))
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _fits(match: PeerMatch, shapes: dict[str, tuple], num_classes: int) -> bool:
    if _model_outline(match.model_name) != _outline(shapes):
        return False
    return _shapes(match.model_name, tuple(sorted(match.overrides.items())), num_classes) == shapes


def _named_by(matches: list[PeerMatch], architecture: str | None, path: Path | None) -> list[PeerMatch]:
    """The rows the peer's files name: by `architecture`, else the longest peer name in the file name."""
    named = [match for match in matches if match.peer_name == architecture]
    if named or path is None:
        return named
    inside = [match for match in matches if match.peer_name in path.name]
    longest = max((len(match.peer_name) for match in inside), default=0)
    return [match for match in inside if len(match.peer_name) == longest]


def detect_model(source: str, state_dict: Mapping[str, torch.Tensor], architecture: str | None = None,
                 path: Path | None = None) -> PeerMatch:
    """The table row of `source` whose effnet model fits the converted `state_dict` exactly."""
    classifier = state_dict.get("classifier.weight")
    num_classes = int(classifier.shape[0]) if classifier is not None else 0
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    fitting = [match for match in PEER_MATCHES if match.source == source and _fits(match, shapes, num_classes)]
    if not fitting:
        models = ", ".join(dict.fromkeys(match.model_name for match in PEER_MATCHES if match.source == source))
        stem = shapes.get("conv_stem.weight")
        raise WeightsError(f"the {source} checkpoint (stem {stem}, {len(shapes)} tensors) fits none of the models "
                           f"effnet converts {source} weights into ({models}); pass --model NAME")
    names = list(dict.fromkeys(match.model_name for match in fitting))
    if len(names) == 1:
        return fitting[0]
    named = _named_by(fitting, architecture, path)
    if len({match.model_name for match in named}) == 1:
        return named[0]
    raise WeightsError(f"the {source} checkpoint fits {' and '.join(names)} alike (padding and BN eps leave no "
                       "trace in a checkpoint); pass --model NAME")
