"""Weights: safe I/O of effnet files and peers' checkpoints, strict loading, converters."""
from effnet.weights.io import WeightsFile, load_weights_file, read_checkpoint, save_weights_file
from effnet.weights.loading import check_state_dict, load_into

__all__ = ["WeightsFile", "load_weights_file", "read_checkpoint", "save_weights_file",
           "check_state_dict", "load_into"]
