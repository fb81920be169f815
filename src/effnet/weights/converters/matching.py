"""Which effnet model (and spec overrides) reproduces each peer model: a table of data.

===================== =============================== ============================ ===========================
source                peer model                      effnet model                 overrides
===================== =============================== ============================ ===========================
timm                  efficientnet_b0 .. b8, l2,      the same name                none
                      efficientnet_lite0 .. lite4
timm                  tf_efficientnet_b0 .. b8, l2,   the same name                none
                      tf_efficientnet_lite0 .. lite4
torchvision           efficientnet_b0 .. b4           efficientnet_b0 .. b4        none
torchvision           efficientnet_b5 .. b7           efficientnet_b5 .. b7        bn_eps=1e-3, bn_momentum=0.01
torchvision           mobilenet_v2, resnet50          the same name                none
efficientnet_pytorch  efficientnet-b0 .. b8, l2       tf_efficientnet_b0 .. b8, l2 none (TF "same" padding and
                                                                                   eps 1e-3 are the tf_ twin's)
transformers          google/efficientnet-b0 .. b7    tf_efficientnet_b0 .. b7     none (TF padding, eps 1e-3;
                                                                                   see converters.transformers)
keras                 EfficientNetB0 .. B7            tf_efficientnet_b0 .. b7     none (TF "same" padding,
                                                                                   eps 1e-3)
===================== =============================== ============================ ===========================

Key names cannot tell these numerics apart (padding and BN eps leave no trace in a state
dict), so this table is what keeps a converted checkpoint's logits equal to its peer's; the
parity tests check every row they can build.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from effnet.errors import WeightsError


@dataclass(frozen=True)
class PeerMatch:
    """One peer model and the effnet model, with spec overrides, that computes the same function."""

    source: str
    peer_name: str
    model_name: str
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


_TIMM_VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "l2",
                  "lite0", "lite1", "lite2", "lite3", "lite4")
# torchvision builds its three largest models with TF's BatchNorm settings.
_TORCHVISION_LARGE = MappingProxyType({"bn_eps": 1e-3, "bn_momentum": 0.01})

PEER_MATCHES: tuple[PeerMatch, ...] = (
    *(PeerMatch("timm", f"{prefix}efficientnet_{variant}", f"{prefix}efficientnet_{variant}")
      for prefix in ("", "tf_") for variant in _TIMM_VARIANTS),
    PeerMatch("torchvision", "efficientnet_b0", "efficientnet_b0"),
    PeerMatch("torchvision", "efficientnet_b1", "efficientnet_b1"),
    PeerMatch("torchvision", "efficientnet_b2", "efficientnet_b2"),
    PeerMatch("torchvision", "efficientnet_b3", "efficientnet_b3"),
    PeerMatch("torchvision", "efficientnet_b4", "efficientnet_b4"),
    PeerMatch("torchvision", "efficientnet_b5", "efficientnet_b5", _TORCHVISION_LARGE),
    PeerMatch("torchvision", "efficientnet_b6", "efficientnet_b6", _TORCHVISION_LARGE),
    PeerMatch("torchvision", "efficientnet_b7", "efficientnet_b7", _TORCHVISION_LARGE),
    PeerMatch("torchvision", "mobilenet_v2", "mobilenet_v2"),
    PeerMatch("torchvision", "resnet50", "resnet50"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b0", "tf_efficientnet_b0"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b1", "tf_efficientnet_b1"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b2", "tf_efficientnet_b2"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b3", "tf_efficientnet_b3"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b4", "tf_efficientnet_b4"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b5", "tf_efficientnet_b5"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b6", "tf_efficientnet_b6"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b7", "tf_efficientnet_b7"),
    PeerMatch("efficientnet_pytorch", "efficientnet-b8", "tf_efficientnet_b8"),
    PeerMatch("efficientnet_pytorch", "efficientnet-l2", "tf_efficientnet_l2"),
    *(PeerMatch("transformers", f"google/efficientnet-b{index}", f"tf_efficientnet_b{index}") for index in range(8)),
    *(PeerMatch("keras", f"EfficientNetB{index}", f"tf_efficientnet_b{index}") for index in range(8)),
)


def _matches_of(source: str) -> list[PeerMatch]:
    matches = [match for match in PEER_MATCHES if match.source == source]
    if not matches:
        known = sorted({match.source for match in PEER_MATCHES})
        raise WeightsError(f"unknown source {source!r}; known sources: {', '.join(known)}")
    return matches


def peer_model(source: str, peer_name: str) -> tuple[str, dict[str, Any]]:
    """The effnet model name and spec overrides that reproduce `source`'s model `peer_name`."""
    matches = _matches_of(source)
    for match in matches:
        if match.peer_name == peer_name:
            return match.model_name, dict(match.overrides)
    names = [match.peer_name for match in matches]
    close = difflib.get_close_matches(peer_name, names, n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"known: {', '.join(names)}"
    raise WeightsError(f"no effnet model matches {source} model {peer_name!r}; {hint}")


def matches_for_model(source: str, model_name: str) -> list[PeerMatch]:
    """The rows of `source` whose effnet model is `model_name` (empty: the pair is not known to fit)."""
    return [match for match in _matches_of(source) if match.model_name == model_name]


def models_for_source(source: str) -> list[str]:
    """Every effnet model that some model of `source` converts into, in table order."""
    return list(dict.fromkeys(match.model_name for match in _matches_of(source)))
