"""Models: layers, the MBConv block, the network built from a spec, and the registry."""
from effnet.models.network import EfficientNet, EfficientNetFeatures, FeatureInfo
from effnet.models.registry import ModelEntry, create_model, get_entry, list_models

__all__ = ["EfficientNet", "EfficientNetFeatures", "FeatureInfo", "ModelEntry", "create_model",
           "get_entry", "list_models"]
