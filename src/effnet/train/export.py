"""A finished run's weights: self-contained `.safetensors` files and a readable `config.json`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from torch import nn

from effnet.spec import spec_to_dict
from effnet.train.config import TrainConfig
from effnet.weights.io import save_weights_file

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"


def export_run(output: Path, model: nn.Module, ema: nn.Module | None, class_names: Sequence[str],
               config: TrainConfig) -> list[Path]:
    """Write the plain and EMA weights (each loadable by `create_model(..., pretrained=PATH)`)."""
    extra = {"train_config": config.as_dict()}
    written = [save_weights_file(output / WEIGHTS, model.state_dict(), model.spec, model.data_config,
                                 list(class_names), extra)]
    if ema is not None:
        written.append(save_weights_file(output / EMA_WEIGHTS, ema.module.state_dict(), model.spec,
                                         model.data_config, list(class_names), extra))
    readable = {
        "model": model.spec.name,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "weights": [path.name for path in written],
        "data_config": model.data_config.as_dict(),
        "spec": spec_to_dict(model.spec),
        "train_config": config.as_dict(),
    }
    (output / "config.json").write_text(json.dumps(readable, indent=2))
    return written
