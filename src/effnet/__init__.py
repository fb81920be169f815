"""effnet: EfficientNet and compound model scaling for PyTorch.

Specs, scaling rules, the registry and the cost model need no torch, so they load at once; building a
model (`create_model`) imports torch when called, and `convert_state_dict` on first use. `effnet --help`,
`effnet list`, `effnet info` and `effnet scale` therefore start without it.
"""
from __future__ import annotations

from effnet import lazy
from effnet.errors import EffnetError, SpecError, UnknownModelError, WeightsError
from effnet.models.registry import create_model, list_models
from effnet.scaling import compound_multipliers, count_macs, count_params, scale_by_multipliers, scale_by_phi
from effnet.spec import NetworkSpec, StageSpec

__version__ = "0.1.0"

_LAZY = {"convert_state_dict": "effnet.weights.convert"}

__all__ = [
    "EffnetError", "SpecError", "UnknownModelError", "WeightsError",
    "create_model", "list_models", "compound_multipliers", "count_macs", "count_params",
    "scale_by_multipliers", "scale_by_phi", "NetworkSpec", "StageSpec", "convert_state_dict",
]

__getattr__, __dir__ = lazy.exports(__name__, _LAZY, globals())
