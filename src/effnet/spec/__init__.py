"""Architecture specs: frozen dataclasses and the families' tables. Imports no torch."""
from effnet.spec.efficientnet import (
    EFFICIENTNET_B0,
    EFFICIENTNET_LITE0,
    EFFICIENTNET_ROWS,
    LITE_ROWS,
    FamilyRow,
)
from effnet.spec.serialize import spec_from_dict, spec_to_dict
from effnet.spec.types import HeadSpec, NetworkSpec, ScalingPolicy, StageSpec, StemSpec

__all__ = [
    "EFFICIENTNET_B0", "EFFICIENTNET_LITE0", "EFFICIENTNET_ROWS", "LITE_ROWS", "FamilyRow",
    "HeadSpec", "NetworkSpec", "ScalingPolicy", "StageSpec", "StemSpec",
    "spec_from_dict", "spec_to_dict",
]
