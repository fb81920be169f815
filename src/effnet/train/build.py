"""Build a run's parts from its config: the model, the data, the optimizer and the EMA."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2

import effnet
from effnet.data import DataSplits, load_dataset, make_eval_transform, make_train_transform
from effnet.folders import folder_problem
from effnet.models import get_entry
from effnet.scaling import scale_by_phi
from effnet.spec import spec_from_dict
from effnet.train.config import ConfigError, TrainConfig, read_config_file

SMALL_IMAGE_DATA = ("builtin", "digits", "fashion-mnist", "cifar10", "cifar100")


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The model to train: by name, by `--phi`, from a spec file, or from pretrained weights."""
    options: dict[str, Any] = dict(num_classes=num_classes, drop_rate=config.drop_rate,
                                   drop_path_rate=config.drop_path_rate, bn_momentum=config.bn_momentum)
    if config.image_size is not None:
        options["resolution"] = config.image_size
    if config.pretrained:
        return effnet.create_model(config.pretrained, **options)
    if config.spec:
        source: Any = spec_from_dict(read_config_file(config.spec))
    elif config.phi is not None:
        source = scale_by_phi(get_entry(config.model).spec, config.phi)
    else:
        source = config.model
    return effnet.create_model(source, **options)


def data_config_for(model: nn.Module, config: TrainConfig):
    """The model's preprocessing at the training size; tiny-image data sets are not centre-cropped."""
    data_config = model.data_config
    if config.data in SMALL_IMAGE_DATA:
        data_config = replace(data_config, crop_pct=1.0)
    return data_config


def build_data(config: TrainConfig, data_config) -> tuple[DataSplits, Callable]:
    """Train split without a transform (the trainer seeds each sample's augmentation) and val split."""
    auto_augment = "imagenet" if config.auto_augment else None
    train_transform = make_train_transform(data_config, auto_augment=auto_augment, hflip=config.hflip,
                                           scale=(config.crop_scale_min, 1.0))
    splits = load_dataset(config.data, root=config.data_root, eval_transform=make_eval_transform(data_config),
                          image_size=config.image_size, val_fraction=config.val_fraction, seed=config.seed,
                          download=True, workers=config.workers)
    return splits, train_transform


def batch_transform(config: TrainConfig, num_classes: int) -> Callable | None:
    """MixUp and/or CutMix (torchvision), picked at random per batch when both are on."""
    choices = []
    if config.mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes))
    if config.cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """EMA of weights *and* buffers (BN statistics), with timm-style warm-up of the decay.

    The decay starts at (1 + n) / (10 + n) for the n-th update, so short runs get a useful
    average instead of one stuck near the initial weights.
    """
    if decay <= 0:
        return None

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # The count from the average's own buffer, on the CPU: `num_averaged` is its copy on the model's
        # device, and reading that back would wait for the GPU at every step.
        count = float(ema.n_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + count) / (10 + count)))(averaged, current, num_averaged)

    ema = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    return ema


def check_batch_fits(train_size: int, batch_size: int, world_size: int) -> None:
    if train_size < batch_size * world_size:
        raise ConfigError(f"batch size {batch_size} x {world_size} process(es) is larger than the "
                          f"{train_size} training images; lower --batch-size")


def ensure_output(path: str) -> Path:
    output = Path(path)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a folder")
    problem = folder_problem(output)
    if problem:
        raise ConfigError(f"output {output}: {problem}")
    return output


def macs_per_image(model: nn.Module, image_size: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass, counted by `torch.utils.flop_counter` on a
    shape-only (meta) copy of the model, so nothing is computed and the real model is untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        replica = effnet.create_model(model.spec, num_classes=getattr(model, "num_classes", 1000),
                                      in_chans=in_channels).eval()
        with FlopCounterMode(display=False) as counter:
            replica(torch.empty(1, in_channels, image_size, image_size))
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-accumulate
