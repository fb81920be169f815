"""Training: typed config and presets, schedule, TF RMSProp, loop, checkpoints, DDP, logs, export.

The config loads without torch (the command line builds `effnet train`'s options from it); the loop
and its parts import it on first use.
"""
from __future__ import annotations

from effnet import lazy
from effnet.train.config import RECIPES, ConfigError, TrainConfig, resolve_config

_LAZY = {"evaluate": "effnet.train.engine", "train_one_epoch": "effnet.train.engine", "train": "effnet.train.run",
         "learning_rate": "effnet.train.schedule"}

__all__ = ["RECIPES", "ConfigError", "TrainConfig", "resolve_config", "evaluate", "train_one_epoch", "train",
           "learning_rate"]

__getattr__, __dir__ = lazy.exports(__name__, _LAZY, globals())
