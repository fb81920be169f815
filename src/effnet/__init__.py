"""effnet: EfficientNet and compound model scaling for PyTorch."""
from effnet.errors import EffnetError, SpecError, UnknownModelError, WeightsError
from effnet.models import create_model, list_models
from effnet.scaling import compound_multipliers, count_macs, count_params, scale_by_multipliers, scale_by_phi
from effnet.spec import NetworkSpec, StageSpec
from effnet.weights.convert import convert_state_dict

__version__ = "0.1.0"

__all__ = [
    "EffnetError", "SpecError", "UnknownModelError", "WeightsError",
    "create_model", "list_models", "compound_multipliers", "count_macs", "count_params",
    "scale_by_multipliers", "scale_by_phi", "NetworkSpec", "StageSpec", "convert_state_dict",
]
