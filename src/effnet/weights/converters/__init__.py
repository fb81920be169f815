"""One converter per peer's key layout.

Each module exposes `SOURCE` (the name users pass as `source=`) and `convert(state_dict)`, which
renames keys into effnet's layout from the keys and shapes alone, or raises WeightsError naming
the first keys it does not recognise. `matching` records which effnet model fits each peer model.
`CONVERTERS` lists them in the order `SOURCES` reports and auto-detection tries them.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from effnet.weights.converters import efficientnet_pytorch, keras, timm, torchvision, transformers

Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]

CONVERTERS: dict[str, Converter] = {
    module.SOURCE: module.convert for module in (timm, torchvision, efficientnet_pytorch, transformers, keras)
}
