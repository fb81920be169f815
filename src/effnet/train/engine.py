"""The training loop and `evaluate`: explicit arguments in, dicts of metrics out."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from effnet.train.distributed import DistContext, all_reduce_sum, all_reduce_tensor


@dataclass
class Precision:
    """Autocast dtype (None: float32) and the fp16 loss scaler."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @classmethod
    def create(cls, amp: str, device: torch.device) -> "Precision":
        dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
        return cls(dtype, scaler)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    device: torch.device,
    precision: Precision,
    learning_rate: Callable[[int], float],
    first_step: int,
    grad_accum_steps: int = 1,
    clip_grad_norm: float | None = None,
    channels_last: bool = False,
    batch_transform: Callable | None = None,
    ema: nn.Module | None = None,
    after_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """One pass over `batches`; every `grad_accum_steps` batches make one optimizer step.

    `first_step` is the global optimizer step the epoch (or resumed part of it) starts at;
    `after_step(step, stats)` runs after each optimizer step (checkpoints, logging, progress).
    """
    model.train()
    step, seen, loss_sum, started = first_step, 0, 0.0, time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for index, (images, targets) in enumerate(batches):
        images, targets = to_device(images, targets, device, channels_last)
        if batch_transform is not None:
            images, targets = batch_transform(images, targets)  # MixUp / CutMix: soft targets
        last_micro_batch = (index + 1) % grad_accum_steps == 0
        sync = contextlib.nullcontext() if last_micro_batch or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with precision.autocast(device):
                loss = criterion(model(images), targets)
            if not math.isfinite(loss.item()):
                raise NonFiniteLossError(f"loss is {loss.item()} at step {step}; lower the learning rate or use "
                                         "--amp none")
            scaled = loss / grad_accum_steps
            (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
        seen += images.shape[0]
        loss_sum += loss.item() * images.shape[0]
        if not last_micro_batch:
            continue
        lr = learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if precision.scaler:
            precision.scaler.unscale_(optimizer)
        if clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if precision.scaler:
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))
        if after_step is not None:
            elapsed = time.perf_counter() - started
            after_step(step, {"loss": loss.item(), "lr": lr, "images_per_second": seen / max(elapsed, 1e-9)})
    elapsed = time.perf_counter() - started
    return {"loss": loss_sum / max(seen, 1), "images": seen, "seconds": elapsed, "step": step}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, *,
             device: torch.device, precision: Precision | None = None, channels_last: bool = False,
             context: DistContext | None = None) -> dict[str, Any]:
    """Top-1, top-5, mean cross-entropy and the confusion matrix (rows: truth), summed over ranks."""
    model.eval()
    precision = precision or Precision(None, None)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    correct1 = correct5 = loss_sum = count = 0.0
    for images, targets in batches:
        images, targets = to_device(images, targets, device, channels_last)
        with precision.autocast(device):
            logits = model(images)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(min(5, num_classes), dim=1).indices  # (N, k)
        hits = top == targets[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += targets.numel()
        pairs = targets.cpu() * num_classes + top[:, 0].cpu()
        confusion += torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)
    if context is not None and context.distributed:
        correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], context)
        confusion = all_reduce_tensor(confusion, context)
    count = max(count, 1)
    per_class_total = confusion.sum(dim=1)
    per_class = (confusion.diag().double() / per_class_total.clamp(min=1)).tolist()
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count,
            "count": int(count), "per_class_accuracy": [100.0 * v for v in per_class],
            "confusion": confusion.tolist()}
