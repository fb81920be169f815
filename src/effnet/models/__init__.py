"""Models: layers, the MBConv block, the network built from a spec, and the registry.

The registry (names, specs, data configs) loads without torch; the network classes import it on
first use.
"""
from __future__ import annotations

from effnet import lazy
from effnet.models.registry import ModelEntry, create_model, get_entry, list_models

_LAZY = {"EfficientNet": "effnet.models.network", "EfficientNetFeatures": "effnet.models.network",
         "FeatureInfo": "effnet.models.network"}

__all__ = ["EfficientNet", "EfficientNetFeatures", "FeatureInfo", "ModelEntry", "create_model",
           "get_entry", "list_models"]

__getattr__, __dir__ = lazy.exports(__name__, _LAZY, globals())
