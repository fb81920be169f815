"""The typed training config, its recipe presets, and how file and command line combine.

Precedence, lowest first: the dataclass defaults (the paper's recipe), the chosen recipe preset,
the data set's defaults (the built-in data set trains small and short), a YAML/JSON config file,
then command-line options. The resolved config is saved with every run.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from effnet.errors import EffnetError
from effnet.fast import MEMORY_SAVERS


class ConfigError(EffnetError, ValueError):
    """A training config or option that cannot be used; the message names it."""


OPTIMIZERS = ("rmsprop_tf", "sgd", "adamw")


@dataclass
class TrainConfig:
    output: str = ""
    # What to train.
    model: str = "efficientnet_b0"
    phi: float | None = None  # compound-scale efficientnet_b0 (or `model`) by phi instead
    spec: str | None = None  # a JSON/YAML NetworkSpec file
    pretrained: str | None = None  # effnet weights to start from (fine-tuning)
    # Data.
    data: str = "builtin"  # builtin | fashion-mnist | cifar10 | cifar100 | an ImageFolder directory
    data_root: str | None = None  # where downloadable data sets live
    image_size: int | None = None  # default: the data set's, else the model's resolution
    val_fraction: float | None = None  # held out when there is no val split (default: the data set's)
    auto_augment: bool = True
    hflip: float = 0.5
    crop_scale_min: float = 0.08  # RandomResizedCrop's smallest area fraction
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Recipe (defaults: the paper's).
    recipe: str = "paper"
    epochs: int = 350
    time_limit_minutes: float | None = None  # stop at the first epoch end past this training time
    batch_size: int = 128  # per process
    optimizer: str = "rmsprop_tf"
    lr: float | None = None  # default: lr_per_256 * global batch / 256
    lr_per_256: float = 0.016
    warmup_epochs: float = 5.0
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    weight_decay: float = 1e-5
    momentum: float = 0.9
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-3
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999  # 0 disables the EMA of weights
    drop_rate: float | None = None  # default: the variant's row
    drop_path_rate: float = 0.2
    bn_momentum: float = 0.01  # TF's 0.99
    # Speed.
    device: str = "auto"
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    memory_saver: str = "none"  # none | activations | stages | both (effnet.fast.memory)
    fused_training: bool = False  # every MBConv conv with its batch norms (effnet.fast.fused_training; GPU)
    cuda_graphs: bool = False  # each optimizer step replayed from one CUDA graph (effnet.train.graphed; GPU)
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    workers: int = 2
    sync_bn: bool = False
    # Reproducibility and bookkeeping.
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 0  # optimizer steps between mid-epoch checkpoints; 0: epoch ends only
    keep_last: int = 2
    resume: str | None = None  # auto | PATH
    log_every: int = 10

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "finetune": dict(epochs=10, optimizer="sgd", lr_per_256=0.01, warmup_epochs=1.0, decay_epochs=1.0,
                     decay_rate=0.8, ema_decay=0.999, drop_path_rate=0.1, bn_momentum=0.1),
}

# Data sets of tiny images train small and short by default, so the built-in run takes minutes.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # EfficientNet's recipe needs hundreds of epochs; on 1.4k tiny digits AdamW converges in minutes.
    "builtin": dict(epochs=10, image_size=32, batch_size=32, optimizer="adamw", lr_per_256=0.032,
                    weight_decay=0.05, warmup_epochs=1.0, decay_epochs=1.0, decay_rate=0.8, auto_augment=False,
                    hflip=0.0, crop_scale_min=0.6, ema_decay=0.998, bn_momentum=0.1, workers=0),
    "fashion-mnist": dict(epochs=10, image_size=32, batch_size=128, warmup_epochs=1.0, decay_epochs=1.0,
                          decay_rate=0.85, auto_augment=False, crop_scale_min=0.6, ema_decay=0.999,
                          bn_momentum=0.1),
    "cifar10": dict(image_size=32, crop_scale_min=0.35),
    "cifar100": dict(image_size=32, crop_scale_min=0.35),
}

_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Check a value against the field's declared type (from YAML, JSON or the command line)."""
    kind = str(_FIELDS[name].type)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{name} must not be empty")
    try:
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {kind.replace(' | None', '')}, got {value!r}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"{path}: cannot parse ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of option: value")
    return data


def resolve_config(options: Mapping[str, Any] | None = None, config_file: str | Path | None = None) -> TrainConfig:
    """Combine defaults, recipe, data set defaults, file and options (only the ones given)."""
    given = {k: v for k, v in (options or {}).items() if v is not None}
    from_file = read_config_file(config_file) if config_file else {}
    for source in (from_file, given):
        unknown = sorted(set(source) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"unknown config option(s): {', '.join(unknown)}")
    chosen = {**from_file, **given}
    recipe = chosen.get("recipe", "paper")
    if recipe not in RECIPES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    data = str(chosen.get("data", TrainConfig.data))
    layers = [RECIPES[recipe], DATASET_DEFAULTS.get(data, {}), from_file, given]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    config = TrainConfig(**{name: _coerce(name, value) for name, value in merged.items()})
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    checks = [
        (bool(config.output), "output: an output directory is required (--output DIR)"),
        (config.epochs > 0, f"epochs must be positive, got {config.epochs}"),
        (config.batch_size > 0, f"batch_size must be positive, got {config.batch_size}"),
        (config.grad_accum_steps > 0, f"grad_accum_steps must be positive, got {config.grad_accum_steps}"),
        (config.amp in ("none", "bf16", "fp16"), f"amp must be none, bf16 or fp16, got {config.amp!r}"),
        (0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}"),
        (0 <= config.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {config.label_smoothing}"),
        (config.val_fraction is None or 0 < config.val_fraction < 1,
         f"val_fraction must be in (0, 1), got {config.val_fraction}"),
        (0 <= config.hflip <= 1, f"hflip must be in [0, 1], got {config.hflip}"),
        (0 < config.crop_scale_min <= 1, f"crop_scale_min must be in (0, 1], got {config.crop_scale_min}"),
        (config.optimizer in OPTIMIZERS,
         f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}"),
        (config.workers >= 0, f"workers must be >= 0, got {config.workers}"),
        # The optimizer and schedule: PyTorch's own checks would raise a traceback mid-setup.
        # lr 0 is allowed: a run that keeps its initial weights (a baseline, or the tests' reference).
        (config.lr is None or config.lr >= 0, f"lr must be >= 0, got {config.lr}"),
        (config.lr_per_256 >= 0, f"lr_per_256 must be >= 0, got {config.lr_per_256}"),
        (config.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {config.warmup_epochs}"),
        (0 < config.decay_rate <= 1, f"decay_rate must be in (0, 1], got {config.decay_rate}"),
        (config.decay_epochs > 0, f"decay_epochs must be positive, got {config.decay_epochs}"),
        (config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}"),
        (0 <= config.momentum < 1, f"momentum must be in [0, 1), got {config.momentum}"),
        (0 <= config.rmsprop_decay < 1, f"rmsprop_decay must be in [0, 1), got {config.rmsprop_decay}"),
        (config.rmsprop_eps > 0, f"rmsprop_eps must be positive, got {config.rmsprop_eps}"),
        (config.clip_grad_norm is None or config.clip_grad_norm > 0,
         f"clip_grad_norm must be positive, got {config.clip_grad_norm}"),
        (config.mixup_alpha >= 0 and config.cutmix_alpha >= 0,
         f"mixup_alpha and cutmix_alpha must be >= 0, got {config.mixup_alpha} and {config.cutmix_alpha}"),
        (config.drop_rate is None or 0 <= config.drop_rate < 1, f"drop_rate must be in [0, 1), got {config.drop_rate}"),
        (0 <= config.drop_path_rate < 1, f"drop_path_rate must be in [0, 1), got {config.drop_path_rate}"),
        (0 < config.bn_momentum <= 1, f"bn_momentum must be in (0, 1], got {config.bn_momentum}"),
        (config.time_limit_minutes is None or config.time_limit_minutes > 0,
         f"time_limit_minutes must be positive, got {config.time_limit_minutes}"),
        (config.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {config.checkpoint_every}"),
        (config.keep_last >= 1, f"keep_last must be at least 1, got {config.keep_last}"),
        (config.log_every >= 1, f"log_every must be at least 1, got {config.log_every}"),
        (config.image_size is None or config.image_size >= 8, f"image_size must be >= 8, got {config.image_size}"),
        (sum(x is not None for x in (config.phi, config.spec)) <= 1, "give at most one of phi and spec"),
        (config.recipe != "finetune" or config.pretrained, "recipe finetune needs pretrained weights (--pretrained)"),
        (config.memory_saver in MEMORY_SAVERS,
         f"memory_saver must be one of {', '.join(MEMORY_SAVERS)}, got {config.memory_saver!r}"),
        # SyncBatchNorm would replace the saver's BN + SiLU modules (and lose their SiLU), and the fused blocks
        # gather each process's own batch statistics.
        (not config.sync_bn or config.memory_saver in ("none", "stages"),
         f"memory_saver {config.memory_saver} replaces the batch norms that sync_bn would synchronise: "
         "use memory_saver stages with sync_bn"),
        (not (config.sync_bn and config.fused_training), "fused_training gathers each process's own batch "
                                                         "statistics: it cannot run with sync_bn"),
        (not config.fused_training or config.memory_saver == "none",
         "fused_training already keeps three tensors per block: it does not combine with a memory_saver"),
        (not config.fused_training or config.channels_last,
         "fused_training's kernels take channels-last activations: add --channels-last"),
        (not config.cuda_graphs or config.amp != "fp16",
         "cuda_graphs cannot replay fp16's loss scaling (it reads the gradients back each step): use --amp bf16"),
        (not config.cuda_graphs or config.grad_accum_steps == 1,
         "cuda_graphs replays one batch a step: it does not combine with grad_accum_steps above 1"),
        (not config.cuda_graphs or config.memory_saver == "none",
         "cuda_graphs is not supported with a memory_saver yet (their capture is unchecked): use one of them"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
