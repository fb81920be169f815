"""Peer models (timm, torchvision, EfficientNet-PyTorch, transformers, Keras) with random weights, for tests.

Fresh models have BatchNorm at identity (mean 0, var 1, weight 1, bias 0) and zero biases, under
which a swapped BN, a wrong eps or a dropped bias could go unnoticed; `randomise` fixes that.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import timm
import torch
import torchvision
from efficientnet_pytorch import EfficientNet
from torch import nn


def build_timm(name: str, image_size: tuple[int, int]) -> nn.Module:
    return timm.create_model(name)


def build_torchvision(name: str, image_size: tuple[int, int]) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None)


def build_efficientnet_pytorch(name: str, image_size: tuple[int, int]) -> nn.Module:
    # Its "same" padding is fixed at construction for image_size: build it for the test input.
    return EfficientNet.from_name(name, image_size=image_size)


def build_transformers(name: str, image_size: tuple[int, int]) -> nn.Module:
    """`EfficientNetForImageClassification` configured as the hub's google/efficientnet-bN."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification
    from transformers.models.efficientnet.modeling_efficientnet import round_filters

    from effnet.spec.efficientnet import EFFICIENTNET_ROWS

    row = {f"google/efficientnet-{row.name}": row for row in EFFICIENTNET_ROWS}[name]
    config = EfficientNetConfig(width_coefficient=row.width, depth_coefficient=row.depth,
                                image_size=row.resolution, dropout_rate=row.dropout, num_labels=1000)
    config.hidden_dim = round_filters(config, 1280)
    return EfficientNetForImageClassification(config)


BUILDERS: dict[str, Callable[[str, tuple[int, int]], nn.Module]] = {
    "timm": build_timm,
    "torchvision": build_torchvision,
    "efficientnet_pytorch": build_efficientnet_pytorch,
    "transformers": build_transformers,
}


def build_peer(source: str, name: str, image_size: tuple[int, int], seed: int = 0) -> nn.Module:
    """The peer model in eval mode with random weights, BN statistics, BN affine and biases."""
    torch.manual_seed(seed)
    model = BUILDERS[source](name, image_size)
    randomise(model, torch.Generator().manual_seed(seed))
    return model.eval()


@torch.no_grad()
def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BN running statistics and affine parameters, and non-zero conv/linear biases."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(_uniform(module.running_mean, -0.5, 0.5, generator))
            module.running_var.copy_(_uniform(module.running_var, 0.5, 2.0, generator))
            module.weight.copy_(_uniform(module.weight, 0.5, 1.5, generator))
            module.bias.copy_(_uniform(module.bias, -0.2, 0.2, generator))
        elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            module.bias.copy_(_uniform(module.bias, -0.1, 0.1, generator))


def _uniform(like: torch.Tensor, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(like.shape).uniform_(low, high, generator=generator)


# --- Keras (backend torch, set in conftest) -----------------------------------------------------

def build_keras(name: str, image_size: tuple[int, int], classes: int = 1000, seed: int = 0):
    """`keras.applications.<name>(weights=None)` for `image_size` inputs, with random BN statistics
    and affine parameters, biases and input Normalization mean and variance."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, name)(weights=None, input_shape=(*image_size, 3), classes=classes,
                                              classifier_activation=None)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (weight.shape for weight in weights)
            layer.set_weights([rng.uniform(0.5, 1.5, gamma), rng.uniform(-0.2, 0.2, beta),
                               rng.uniform(-0.5, 0.5, mean), rng.uniform(0.5, 2.0, variance)])
        elif isinstance(layer, keras.layers.Normalization):
            mean, variance, count = weights
            layer.set_weights([rng.uniform(0.3, 0.6, mean.shape), rng.uniform(0.04, 0.09, variance.shape), count])
        elif len(weights) == 2:  # kernel and bias
            layer.set_weights([weights[0], rng.uniform(-0.1, 0.1, weights[1].shape)])
    return model


def keras_logits(model, pixels: torch.Tensor) -> torch.Tensor:
    """A Keras model's output for NCHW pixels in 0..255 (Keras takes NHWC and normalises inside)."""
    import keras

    output = model(pixels.permute(0, 2, 3, 1).numpy(), training=False)
    return torch.as_tensor(keras.ops.convert_to_numpy(output))




def relative_error(ours: torch.Tensor, peer: torch.Tensor) -> float:
    """‖ours − peer‖ / ‖peer‖."""
    return float((ours - peer).norm() / peer.norm())


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


class _WritesMarker:
    """Unpickling this runs `exec`, which creates the marker file: what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({os.fspath(self.marker)!r}, 'w').write('pwned')",)


def write_hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A `torch.save` file whose unpickling would create `marker` (around a real-looking state dict)."""
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(1)}, "payload": _WritesMarker(marker)}, path)
    return path
