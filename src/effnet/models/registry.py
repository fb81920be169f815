"""Registered variants (rows of data plus one registration loop) and `create_model`."""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from effnet.errors import SpecError, UnknownModelError
from effnet.spec.classic import CLASSIC_BASES
from effnet.spec.data import INCEPTION_MEAN, INCEPTION_STD, DataConfig, default_data_config
from effnet.spec.efficientnet import (
    EFFICIENTNET_B0,
    EFFICIENTNET_LITE0,
    EFFICIENTNET_ROWS,
    LITE_ROWS,
    TF_NUMERICS,
    apply_row,
)
from effnet.spec.types import NetworkSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    spec: NetworkSpec
    data_config: DataConfig
    description: str


_DOC = ("EfficientNet-{variant}: width x{width}, depth x{depth}, {resolution} px, dropout {dropout}; "
        "{numerics}.")
_NUMERICS = {
    "": "symmetric padding, BN eps 1e-5 (timm / torchvision layout)",
    "tf_": "TensorFlow 'same' padding, BN eps 1e-3 (for weights ported from TensorFlow)",
}

_REGISTRY: dict[str, ModelEntry] = {}


def _register_families() -> None:
    families = ((EFFICIENTNET_B0, EFFICIENTNET_ROWS), (EFFICIENTNET_LITE0, LITE_ROWS))
    for base, rows in families:
        for row in rows:
            for prefix, numerics in (("", {}), ("tf_", TF_NUMERICS)):
                name = f"{prefix}efficientnet_{row.name}"
                spec = replace(apply_row(base, row, name), **numerics)
                # TF's Lite weights were trained on inputs scaled to [-1, 1].
                lite_tf = prefix == "tf_" and base is EFFICIENTNET_LITE0
                stats = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD) if lite_tf else {}
                _REGISTRY[name] = ModelEntry(
                    name=name,
                    spec=spec,
                    data_config=default_data_config(row.resolution, **stats),
                    description=_DOC.format(variant=row.name.upper(), width=row.width, depth=row.depth,
                                            resolution=row.resolution, dropout=row.dropout,
                                            numerics=_NUMERICS[prefix]),
                )


def _register_classic_bases() -> None:
    """MobileNetV1, MobileNetV2 and ResNet-50 as they are; scale them with `scale_by_phi`."""
    for spec, description in CLASSIC_BASES:
        # torchvision's evaluation preprocessing for these: resize 256, centre crop 224, bilinear.
        data_config = DataConfig(input_size=(3, spec.resolution, spec.resolution), crop_pct=0.875,
                                 interpolation="bilinear")
        _REGISTRY[spec.name] = ModelEntry(name=spec.name, spec=spec, data_config=data_config,
                                          description=f"{description}.")


_register_families()
_register_classic_bases()


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` is a shell-style filter such as `tf_*lite*`."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def get_entry(name: str) -> ModelEntry:
    """The registered variant `name`, or UnknownModelError listing the closest names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; see `effnet list`"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


_SPEC_FIELDS = {f.name for f in dataclasses.fields(NetworkSpec)} - {"name", "stages", "stem", "head", "scaling"}


def _apply_overrides(spec: NetworkSpec, overrides: dict[str, Any]) -> NetworkSpec:
    unknown = sorted(set(overrides) - _SPEC_FIELDS)
    if unknown:
        raise SpecError(f"unknown option(s) {', '.join(unknown)}; spec options: {', '.join(sorted(_SPEC_FIELDS))}")
    return replace(spec, **overrides) if overrides else spec


def _is_path(value: Any) -> bool:
    return isinstance(value, os.PathLike) or (isinstance(value, str) and (
        value.endswith(".safetensors") or os.path.sep in value or os.path.isdir(value)))


def _published_weights(name_or_spec: Any, pretrained: bool | str) -> os.PathLike:
    """The cached effnet file of published weights for a registered model (see effnet.weights.hub)."""
    from effnet.weights.hub import published_weights

    if not isinstance(name_or_spec, str):
        raise SpecError(f"pretrained={pretrained!r} needs a registered model name, "
                        f"got {type(name_or_spec).__name__}")
    get_entry(name_or_spec)  # an unknown name fails listing the closest ones
    return published_weights(name_or_spec, pretrained)


def create_model(
    name_or_spec: str | NetworkSpec | os.PathLike,
    *,
    num_classes: int | None = None,
    pretrained: bool | str | os.PathLike | None = None,
    in_chans: int = 3,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered variant, a `NetworkSpec`, or the model stored in an effnet weights file.

    num_classes: classifier size; 1000 by default, or the weights file's own when `pretrained` is a
        file (a different number keeps the trunk and starts a new classifier: fine-tuning).
    pretrained: an effnet `.safetensors` file or a run folder holding `model.safetensors`; or published
        weights, fetched and converted once into a cache (`effnet.weights.hub`): True (the model's
        default), "timm:TAG", "torchvision:ENUM" or "hf:REPO".
    drop_rate, drop_path_rate: dropout before the classifier and the stochastic-depth rate.
    features_only: return the multi-scale trunk (`out_indices` picks levels).
    overrides: spec fields such as `bn_eps`, `bn_momentum`, `padding`, `activation`, `resolution`.
    """
    from effnet.models.network import EfficientNet, EfficientNetFeatures
    from effnet.weights.io import load_weights_file
    from effnet.weights.loading import load_into
    from effnet.weights.published import is_reference

    if _is_path(name_or_spec) and pretrained is None:
        name_or_spec, pretrained = None, name_or_spec
    weights = None
    if pretrained is True or is_reference(pretrained):
        pretrained = _published_weights(name_or_spec, pretrained)
    if pretrained:
        weights = load_weights_file(pretrained)
        if name_or_spec is not None:
            wanted = name_or_spec if isinstance(name_or_spec, str) else name_or_spec.name
            if wanted != weights.spec.name:
                raise SpecError(f"{pretrained} holds {weights.spec.name} weights, not {wanted}")
        spec, data_config = weights.spec, weights.data_config
    elif isinstance(name_or_spec, NetworkSpec):
        spec, data_config = name_or_spec, default_data_config(name_or_spec.resolution, in_chans)
    elif isinstance(name_or_spec, str):
        entry = get_entry(name_or_spec)
        spec, data_config = entry.spec, entry.data_config
    else:
        raise SpecError(f"create_model takes a model name, a NetworkSpec or a weights path, "
                        f"got {type(name_or_spec).__name__}")

    spec = _apply_overrides(spec, overrides)
    if drop_rate is not None:
        spec = replace(spec, head=replace(spec.head, dropout=drop_rate))
    if drop_path_rate is not None:
        spec = replace(spec, drop_path_rate=drop_path_rate)
    if "resolution" in overrides:
        data_config = default_data_config(spec.resolution, in_chans, data_config.mean, data_config.std)
    if in_chans != data_config.input_size[0]:
        data_config = replace(data_config, input_size=(in_chans, *data_config.input_size[1:]))

    if features_only:
        model = EfficientNetFeatures(spec, in_chans, out_indices, data_config)
    else:
        if out_indices is not None:
            raise SpecError("out_indices applies only with features_only=True")
        classes = num_classes if num_classes is not None else (weights.num_classes if weights else 1000)
        model = EfficientNet(spec, classes, in_chans, data_config)
    if weights is not None:
        load_into(model, weights.state_dict, source=str(pretrained))
        same_head = getattr(model, "num_classes", None) == weights.num_classes
        model.class_names = weights.class_names if same_head else None  # a new head has new classes
    return model
