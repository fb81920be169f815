"""Published weights by name: which peer checkpoint each effnet model loads, as data.

A reference is `SOURCE:NAME`:
- `timm:efficientnet_b3.ra2_in1k`: a timm model tag on the Hugging Face hub (repo `timm/<tag>`);
  `timm:ra2_in1k` means that tag of the timm model matching the effnet model;
- `torchvision:IMAGENET1K_V1` (or `DEFAULT`): a weights enum of the torchvision model matching the
  effnet model; its URL, preprocessing and class names are read from torchvision at run time;
- `hf:google/efficientnet-b0`: a transformers repository on the Hugging Face hub.
`pretrained=True` means the row of `DEFAULT_WEIGHTS` for the model. Which effnet model a peer
model converts into (and with which numerics) is `converters.matching`'s business.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from effnet.errors import WeightsError
from effnet.weights.converters.matching import PEER_MATCHES, matches_for_model

# Reference prefix -> converter source.
SCHEMES: Mapping[str, str] = MappingProxyType({"timm": "timm", "torchvision": "torchvision", "hf": "transformers"})

_TF_TAGS = {f"b{index}": "ns_jft_in1k" for index in range(8)} | {"b8": "ra_in1k", "l2": "ns_jft_in1k"}

# pretrained=True: the best-known ImageNet-1k weights for each model that has any.
DEFAULT_WEIGHTS: Mapping[str, str] = MappingProxyType({
    "efficientnet_b0": "timm:efficientnet_b0.ra_in1k",
    "efficientnet_b1": "timm:efficientnet_b1.ft_in1k",
    "efficientnet_b2": "timm:efficientnet_b2.ra_in1k",
    "efficientnet_b3": "timm:efficientnet_b3.ra2_in1k",
    "efficientnet_b4": "timm:efficientnet_b4.ra2_in1k",
    "efficientnet_b5": "timm:efficientnet_b5.sw_in12k_ft_in1k",
    "efficientnet_b6": "torchvision:IMAGENET1K_V1",
    "efficientnet_b7": "torchvision:IMAGENET1K_V1",
    "efficientnet_lite0": "timm:efficientnet_lite0.ra_in1k",
    **{f"tf_efficientnet_{variant}": f"timm:tf_efficientnet_{variant}.{tag}" for variant, tag in _TF_TAGS.items()},
    **{f"tf_efficientnet_lite{index}": f"timm:tf_efficientnet_lite{index}.in1k" for index in range(5)},
    "mobilenet_v2": "torchvision:IMAGENET1K_V2",
    "resnet50": "torchvision:IMAGENET1K_V2",
})


@dataclass(frozen=True)
class Reference:
    """One published checkpoint for one effnet model."""

    model_name: str
    source: str  # a converter source: timm, torchvision or transformers
    peer_name: str  # timm architecture, torchvision builder, or hub repository
    name: str  # timm tag (`efficientnet_b3.ra2_in1k`), torchvision enum member, or hub repository

    def __str__(self) -> str:
        scheme = next(scheme for scheme, source in SCHEMES.items() if source == self.source)
        return f"{scheme}:{self.name}"


def is_reference(value: object) -> bool:
    """Whether `pretrained=value` names published weights rather than a local file."""
    if not isinstance(value, str) or ":" not in value or os.path.exists(value):
        return False
    return value.split(":", 1)[0] in SCHEMES


def _peer_for(source: str, model_name: str) -> str:
    """The peer model of `source` that converts into `model_name`."""
    matches = matches_for_model(source, model_name)
    if not matches:
        models = sorted({match.model_name for match in PEER_MATCHES if match.source == source})
        raise WeightsError(f"no {source} model converts into {model_name}; {source} weights fit {', '.join(models)}")
    return matches[0].peer_name


def resolve(model_name: str, pretrained: bool | str) -> Reference:
    """The published checkpoint `pretrained` (True or a reference) names for `model_name`."""
    if pretrained is True:
        if model_name not in DEFAULT_WEIGHTS:
            raise WeightsError(f"no published weights are known for {model_name}; models with some: "
                               f"{', '.join(sorted(DEFAULT_WEIGHTS))}")
        pretrained = DEFAULT_WEIGHTS[model_name]
    if not is_reference(pretrained):
        raise WeightsError(f"not a published weights reference: {pretrained!r} (use timm:TAG, torchvision:ENUM "
                           "or hf:REPO)")
    scheme, name = str(pretrained).split(":", 1)
    source = SCHEMES[scheme]
    if source == "timm":
        architecture, _, tag = name.rpartition(".")
        if not architecture:  # `timm:ra2_in1k`: that tag of the matching timm model
            architecture = _peer_for(source, model_name)
            name = f"{architecture}.{tag}"
        matches = [match for match in PEER_MATCHES if match.source == source and match.peer_name == architecture]
        if not matches:
            raise WeightsError(f"timm:{name}: {architecture} is not a timm EfficientNet effnet converts")
        if matches[0].model_name != model_name:
            raise WeightsError(f"timm:{name} holds {matches[0].model_name} weights, not {model_name}")
        return Reference(model_name, source, architecture, name)
    if source == "torchvision":
        return Reference(model_name, source, _peer_for(source, model_name), name)
    # transformers: google/efficientnet-bN must be the model's own; another repository (a fine-tuned
    # model) is checked by the strict load after download.
    own = [match for match in PEER_MATCHES if match.source == source and match.peer_name == name]
    if own and own[0].model_name != model_name:
        raise WeightsError(f"hf:{name} holds {own[0].model_name} weights, not {model_name}")
    _peer_for(source, model_name)
    return Reference(model_name, source, name, name)
