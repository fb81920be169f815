"""Training: typed config and presets, schedule, TF RMSProp, loop, checkpoints, DDP, logs, export."""
from effnet.train.config import RECIPES, ConfigError, TrainConfig, resolve_config
from effnet.train.engine import evaluate, train_one_epoch
from effnet.train.run import train
from effnet.train.schedule import learning_rate

__all__ = ["RECIPES", "ConfigError", "TrainConfig", "resolve_config", "evaluate", "train_one_epoch", "train",
           "learning_rate"]
