"""Pure learning-rate schedule of the paper: linear warm-up, then x0.97 every 2.4 epochs."""
from __future__ import annotations

import math


def learning_rate(step: int, steps_per_epoch: int, base_lr: float, warmup_epochs: float = 5.0,
                  decay_rate: float = 0.97, decay_epochs: float = 2.4, staircase: bool = True) -> float:
    """The learning rate for optimizer step `step` (0-based).

    Warm-up rises linearly from ~0 to `base_lr` over `warmup_epochs`; afterwards the rate is
    `base_lr * decay_rate ** (epoch / decay_epochs)`, floored to whole decay periods when
    `staircase` (TF's `exponential_decay(staircase=True)`, as the official code does).
    """
    epoch = step / steps_per_epoch
    if epoch < warmup_epochs:
        return base_lr * (step + 1) / (warmup_epochs * steps_per_epoch)
    periods = epoch / decay_epochs
    return base_lr * decay_rate ** (math.floor(periods) if staircase else periods)
