"""`train(config)`: one run from config to exported weights, resumable at any checkpoint."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset

from effnet.data import make_loader
from effnet.spec import spec_to_dict
from effnet.train import build
from effnet.train.checkpoint import CheckpointManager, capture_rng, load_checkpoint, restore_rng
from effnet.train.config import ConfigError, TrainConfig
from effnet.train.distributed import DistContext, all_reduce_sum, cleanup, init_distributed
from effnet.train.engine import Precision, evaluate, train_one_epoch
from effnet.train.export import export_run
from effnet.train.logs import RunLogger, plot_history
from effnet.train.optim import build_optimizer
from effnet.train.sampling import ResumableSampler, SeededAugmentation
from effnet.train.schedule import learning_rate
from effnet.train.sync_bn import convert_global_batchnorm


@dataclass
class RunState:
    """Where the run is: what a checkpoint must restore besides the modules."""

    epoch: int = 0
    batches_done: int = 0  # micro-batches consumed in `epoch` (mid-epoch resume point)
    step: int = 0  # optimizer steps overall
    best_top1: float = -1.0
    train_images: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def _identity(model: nn.Module, num_classes: int) -> dict[str, Any]:
    return {"spec": spec_to_dict(model.spec), "num_classes": num_classes}


@dataclass
class Run:
    """Everything one run trains with, built once from the config."""

    model: nn.Module  # the bare model (weights are saved from here)
    trained: nn.Module  # what the loop calls: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    ema: nn.Module | None
    precision: Precision
    sampler: ResumableSampler
    train_data: SeededAugmentation
    loader: Any
    val_loader: Any
    criterion: nn.Module
    mixing: Any
    schedule: Any
    manager: CheckpointManager
    logger: RunLogger
    identity: dict[str, Any]
    num_classes: int
    whole_step: Any = None  # with cuda_graphs: each optimizer step, replayed (effnet.train.graphed.GraphedStep)


def _out_of_time(config: TrainConfig, state: RunState) -> bool:
    """Past the time budget (counted in training seconds, so resumes add up, and the same on every rank)."""
    return config.time_limit_minutes is not None and state.train_seconds >= 60 * config.time_limit_minutes


def _resume_path(config: TrainConfig, manager: CheckpointManager) -> Path | None:
    if config.resume is None:
        return None
    if config.resume == "auto":
        return manager.latest()
    return Path(config.resume)


def _restore(path: Path, run: Run) -> RunState:
    checkpoint = load_checkpoint(path)
    if checkpoint.get("identity") != run.identity:
        old, new = checkpoint.get("identity", {}), run.identity
        raise ConfigError(
            f"cannot resume from {path}: it trained {old.get('spec', {}).get('name')} with "
            f"{old.get('num_classes')} classes, this run builds {new['spec']['name']} with {new['num_classes']} "
            "classes (or another spec); start a new --output or drop --resume")
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.ema is not None and checkpoint.get("ema") is not None:
        run.ema.load_state_dict(checkpoint["ema"])
    if run.precision.scaler is not None and checkpoint.get("scaler") is not None:
        run.precision.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng(checkpoint["rng"])
    return RunState(**checkpoint["state"])


def _payload(run: Run, state: RunState, config: TrainConfig) -> dict:
    return {
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.precision.scaler.state_dict() if run.precision.scaler is not None else None,
        "state": dict(vars(state)),
        "rng": capture_rng(),
        "config": config.as_dict(),
        "identity": run.identity,
    }


def _val_loader(dataset, config: TrainConfig, context: DistContext):
    if context.distributed:  # each rank evaluates its own shard; metrics are summed
        dataset = Subset(dataset, list(range(context.rank, len(dataset), context.world_size)))
    return make_loader(dataset, config.batch_size, workers=config.workers, seed=config.seed)


def _progress(total: int, initial: int, enabled: bool, description: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled or None, desc=description, unit="step",
                dynamic_ncols=True, leave=False)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as `config` says; returns the summary also written to `OUTPUT/summary.json`."""
    context = init_distributed(config.device)
    try:
        return _train(config, context)
    finally:
        cleanup(context)


def _train(config: TrainConfig, context: DistContext) -> dict[str, Any]:
    output = build.ensure_output(config.output)
    seed_everything(config.seed, config.deterministic)
    started = time.perf_counter()
    with torch.device("meta"):  # only the preprocessing is needed before the class count is known
        data_config = build.data_config_for(build.build_model(config, num_classes=0), config)
    splits, train_transform = build.build_data(config, data_config)
    build.check_batch_fits(len(splits.train), config.batch_size, context.world_size)
    run = _build_run(config, context, output, splits, train_transform, data_config)
    resume = _resume_path(config, run.manager)
    state = _restore(resume, run) if resume else RunState()
    if context.is_main:
        (output / "config.resolved.json").write_text(json.dumps(config.as_dict(), indent=2))
    try:
        while state.epoch < config.epochs and not _out_of_time(config, state):
            _run_epoch(config, context, state, run)
    finally:
        run.logger.close()
    return _finish(config, output, state, run, splits, started) if context.is_main else {}


def _speed_paths(model: nn.Module, config: TrainConfig, device: torch.device) -> None:
    """Switch the model (in place) to the memory saver or the fused training blocks the config asks for: the
    same function and state-dict keys (`effnet.fast`)."""
    if config.memory_saver != "none":
        from effnet.fast.memory import enable_memory_saving

        enable_memory_saving(model, config.memory_saver)
    if config.fused_training:
        from effnet.fast import kernels
        from effnet.fast.fused_training import use_fused_training

        if not kernels.usable(torch.empty(0, device=device)):
            raise ConfigError(f"fused_training runs Triton kernels: it needs a CUDA device (this run's is {device}; "
                              "TRITON_INTERPRET=1 runs them on the CPU, slowly, for testing)")
        try:
            use_fused_training(model)
        except ValueError as error:  # a model without MBConv blocks (resnet50, mobilenet_v1)
            raise ConfigError(f"fused_training: {error}") from None


def _build_run(config: TrainConfig, context: DistContext, output: Path, splits, train_transform,
               data_config) -> Run:
    num_classes = len(splits.classes)
    model = build.build_model(config, num_classes)
    model.data_config = data_config
    identity = _identity(model, num_classes)
    if config.sync_bn and context.distributed:  # torch's SyncBatchNorm needs a GPU
        model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if context.device.type == "cuda"
                 else convert_global_batchnorm(model))
    model = model.to(context.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    _speed_paths(model, config, context.device)
    train_data = SeededAugmentation(splits.train, train_transform, config.seed)
    sampler = ResumableSampler(len(train_data), config.batch_size, config.seed, context.rank, context.world_size)
    steps_per_epoch = sampler.steps_per_epoch // config.grad_accum_steps
    if steps_per_epoch == 0:
        raise ConfigError(f"--grad-accum-steps {config.grad_accum_steps} exceeds the {sampler.steps_per_epoch} "
                          "batches of an epoch")
    global_batch = config.batch_size * context.world_size * config.grad_accum_steps
    base_lr = config.lr if config.lr is not None else config.lr_per_256 * global_batch / 256

    def schedule(step: int) -> float:
        return learning_rate(step, steps_per_epoch, base_lr, config.warmup_epochs, config.decay_rate,
                             config.decay_epochs)

    trained = DistributedDataParallel(model) if context.distributed else model
    trained = torch.compile(trained) if config.compile else trained
    optimizer = build_optimizer(model, config.optimizer, base_lr, config.weight_decay, config.momentum,
                                config.rmsprop_decay, config.rmsprop_eps, capturable=config.cuda_graphs)
    precision = Precision.create(config.amp, context.device)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    return Run(
        model=model,
        trained=trained,
        optimizer=optimizer,
        ema=build.build_ema(model, config.ema_decay),
        precision=precision,
        sampler=sampler,
        train_data=train_data,
        loader=make_loader(train_data, config.batch_size, sampler=sampler, workers=config.workers,
                           seed=config.seed),
        val_loader=_val_loader(splits.val, config, context),
        criterion=criterion,
        mixing=build.batch_transform(config, num_classes),
        schedule=schedule,
        manager=CheckpointManager(output / "checkpoints", config.keep_last),
        logger=RunLogger(output, enabled=context.is_main),
        identity=identity,
        num_classes=num_classes,
        whole_step=_graphed_step(config, context, trained, optimizer, criterion, precision),
    )


def _graphed_step(config: TrainConfig, context: DistContext, trained: nn.Module, optimizer: torch.optim.Optimizer,
                  criterion: nn.Module, precision: Precision):
    """With cuda_graphs, the optimizer step a CUDA graph replays (`effnet.train.graphed`); else None."""
    if not config.cuda_graphs:
        return None
    if context.device.type != "cuda":
        raise ConfigError(f"cuda_graphs captures the training step on a GPU: it needs a CUDA device (this run's is "
                          f"{context.device})")
    if context.distributed:
        raise ConfigError("cuda_graphs is not supported with several processes yet (DDP's gradient exchange is not "
                          "captured here): run without it under torchrun")
    from effnet.train.graphed import GraphedStep, TrainStep

    return GraphedStep(TrainStep(trained, optimizer, criterion, precision=precision, device=context.device,
                                 clip_grad_norm=config.clip_grad_norm))


def _run_epoch(config: TrainConfig, context: DistContext, state: RunState, run: Run) -> None:
    start_batch = state.batches_done
    run.sampler.set_epoch(state.epoch, start_batch)
    run.train_data.set_epoch(state.epoch)
    total_steps = run.sampler.steps_per_epoch // config.grad_accum_steps
    bar = _progress(total_steps, start_batch // config.grad_accum_steps, context.is_main,
                    f"epoch {state.epoch + 1}/{config.epochs}")
    epoch_start_step = state.step - start_batch // config.grad_accum_steps

    def after_step(step: int, stats: dict[str, float]) -> None:
        state.step = step
        state.batches_done = (step - epoch_start_step) * config.grad_accum_steps
        bar.update(1)
        if "loss" in stats:  # read back at log and checkpoint steps only: the host runs ahead of the GPU between
            bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}",
                            img_s=f"{stats['images_per_second']:.0f}")
        if step % config.log_every == 0:
            run.logger.step(step, stats)
        mid_epoch = state.batches_done < total_steps * config.grad_accum_steps
        if config.checkpoint_every and step % config.checkpoint_every == 0 and context.is_main and mid_epoch:
            run.manager.save(_payload(run, state, config), step)

    stats = train_one_epoch(
        run.trained, run.loader, run.optimizer, run.criterion, device=context.device, precision=run.precision,
        learning_rate=run.schedule, first_step=state.step, grad_accum_steps=config.grad_accum_steps,
        clip_grad_norm=config.clip_grad_norm, channels_last=config.channels_last, batch_transform=run.mixing,
        ema=run.ema, after_step=after_step, whole_step=run.whole_step,
        read_every=math.gcd(config.log_every, config.checkpoint_every))  # gcd(n, 0) = n
    bar.close()
    state.train_images += int(stats["images"]) * context.world_size
    # The mean over ranks: every rank must agree on the time budget, or they would deadlock.
    state.train_seconds += all_reduce_sum([stats["seconds"]], context)[0] / context.world_size
    row = _evaluate_epoch(config, context, state, run, stats)
    state.epoch += 1
    state.batches_done = 0
    is_best = row["top1"] > state.best_top1
    state.best_top1 = max(state.best_top1, row["top1"])
    state.history.append(row)
    run.logger.epoch(row)
    if context.is_main:
        run.manager.save(_payload(run, state, config), state.step, is_best=is_best)
        ema = f", EMA top-1 {row['ema_top1']:.2f}%" if row["ema_top1"] is not None else ""
        print(f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss "
              f"{row['val_loss']:.4f}, top-1 {row['top1']:.2f}%{ema}, {row['images_per_second']:.0f} images/s",
              file=sys.stderr, flush=True)


def _evaluate_epoch(config: TrainConfig, context: DistContext, state: RunState, run: Run,
                    stats: dict[str, float]) -> dict[str, Any]:
    evaluation = dict(device=context.device, precision=run.precision, channels_last=config.channels_last,
                      context=context)
    plain = evaluate(run.model, run.val_loader, run.num_classes, **evaluation)
    ema = evaluate(run.ema, run.val_loader, run.num_classes, **evaluation) if run.ema is not None else None
    return {
        "epoch": state.epoch + 1, "step": state.step, "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": stats["loss"], "val_loss": plain["loss"], "top1": plain["top1"], "top5": plain["top5"],
        "ema_top1": ema["top1"] if ema else None, "ema_top5": ema["top5"] if ema else None,
        "images_per_second": stats["images"] * context.world_size / max(stats["seconds"], 1e-9),
        "seconds": stats["seconds"],
    }


def _finish(config: TrainConfig, output: Path, state: RunState, run: Run, splits, started: float) -> dict[str, Any]:
    export_run(output, run.model, run.ema, splits.classes, config)
    plot_history(state.history, output)
    last = state.history[-1] if state.history else {}
    summary = {
        "top1": last.get("top1"), "top5": last.get("top5"), "val_loss": last.get("val_loss"),
        "ema_top1": last.get("ema_top1"), "ema_top5": last.get("ema_top5"),
        "best_top1": state.best_top1, "epochs": state.epoch, "steps": state.step,
        "images_per_second": state.train_images / max(state.train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - started,
        "num_classes": run.num_classes, "train_images": len(splits.train), "val_images": len(splits.val),
        "skipped_files": [item.path for item in splits.skipped],
        "skipped": [{"path": item.path, "reason": item.reason} for item in splits.skipped],
        "model": run.model.spec.name, "data": config.data,
        "image_size": run.model.data_config.input_size[-1],
        "macs_per_image": build.macs_per_image(run.model, run.model.data_config.input_size[-1]),
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
