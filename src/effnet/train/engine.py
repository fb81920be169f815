"""The training loop and `evaluate`: explicit arguments in, dicts of metrics out."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from effnet.errors import EffnetError
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

    def autocast(self, device: torch.device, cache: bool = True) -> contextlib.AbstractContextManager:
        """Autocast to this dtype (nothing for float32); `cache=False` casts the weights at each use, as a
        captured step must (a replay would not redo casts cached before it)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype, cache_enabled=cache)


class NonFiniteLossError(EffnetError, RuntimeError):
    """The loss became NaN or infinite: the run stops instead of training on garbage (one line from the CLI;
    the checkpoints written before it hold finite weights)."""


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


class _LossWindow:
    """The summed loss of each optimizer step since the last read, kept where it was computed.

    Reading a CUDA tensor back waits for every kernel queued before it, so a loop that reads its loss each step
    keeps the host from queueing the next step while the GPU runs this one: the step costs the host's time plus
    the GPU's. The loop reads these back together, one wait for `read_every` steps."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []  # (step, images)
        self.sums: list[torch.Tensor] = []

    def add(self, step: int, loss_sum: torch.Tensor, images: int) -> None:
        self.steps.append((step, images))
        self.sums.append(loss_sum)

    def read(self) -> tuple[float, int]:
        """The window's summed loss and images (one host wait); a step with a non-finite loss raises."""
        values = torch.stack(self.sums).tolist() if self.sums else []
        for (step, images), value in zip(self.steps, values):
            if not math.isfinite(value):
                raise NonFiniteLossError(f"loss is {value / images} at step {step}; lower the learning rate or "
                                         "use --amp none")
        total, images = math.fsum(values), sum(count for _, count in self.steps)
        self.steps, self.sums = [], []
        return total, images


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, lr: float,
            clip_grad_norm: float | None) -> None:
    """The optimizer's step on the accumulated gradients at learning rate `lr`, then the gradients set to None."""
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
    read_every: int = 1,
    whole_step: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One pass over `batches`; every `grad_accum_steps` batches make one optimizer step.

    `whole_step(images, targets, lr)`, where given, runs each batch's whole optimizer step itself (forward,
    backward, clipping, update: `effnet.train.graphed.GraphedStep` replays it from a CUDA graph) and returns the
    batch's summed loss; `grad_accum_steps` must then be 1, and `precision`, `clip_grad_norm` are its own.

    `first_step` is the global optimizer step the epoch (or resumed part of it) starts at;
    `after_step(step, stats)` runs after each optimizer step (checkpoints, logging, progress) with the step's
    "lr". The loss stays on the device between reads, at every step that is a multiple of `read_every` and
    once more before returning: at a read, a non-finite loss raises `NonFiniteLossError` (before `after_step`
    runs), and `stats` also holds "loss" (the mean per image since the last read) and "images_per_second".
    """
    if read_every < 1:
        raise ValueError(f"read_every must be at least 1, got {read_every}")
    if whole_step is not None and grad_accum_steps != 1:
        raise ValueError(f"a whole step takes one batch a step, got grad_accum_steps {grad_accum_steps}")
    model.train()
    step, started = first_step, time.perf_counter()
    window, step_sum, step_images = _LossWindow(), None, 0
    seen, loss_total = 0, 0.0
    if whole_step is None:  # a captured step's gradients are its graph's: each replay writes them afresh
        optimizer.zero_grad(set_to_none=True)
    for index, (images, targets) in enumerate(batches):
        images, targets = to_device(images, targets, device, channels_last)
        if batch_transform is not None:
            images, targets = batch_transform(images, targets)  # MixUp / CutMix: soft targets
        if whole_step is not None:
            lr = learning_rate(step)
            step_sum, step_images = whole_step(images, targets, lr), images.shape[0]
        else:
            last_micro_batch = (index + 1) % grad_accum_steps == 0
            sync = contextlib.nullcontext() if last_micro_batch or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with precision.autocast(device):
                    loss = criterion(model(images), targets)
                scaled = loss / grad_accum_steps
                (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
            weighted = loss.detach().float() * images.shape[0]
            step_sum = weighted if step_sum is None else step_sum + weighted
            step_images += images.shape[0]
            if not last_micro_batch:
                continue
            lr = learning_rate(step)
            _update(model, optimizer, precision, lr, clip_grad_norm)
        step += 1
        window.add(step, step_sum, step_images)
        step_sum, step_images = None, 0
        if ema is not None:
            ema.update_parameters(getattr(model, "module", model))
        stats = {"lr": lr}
        if step % read_every == 0:
            total, count = window.read()
            loss_total, seen = loss_total + total, seen + count
            stats.update(loss=total / max(count, 1),
                         images_per_second=seen / max(time.perf_counter() - started, 1e-9))
        if after_step is not None:
            after_step(step, stats)
    if step_sum is not None:  # the micro-batches after the epoch's last whole step: no update, counted all the same
        window.add(step, step_sum, step_images)
    total, count = window.read()
    loss_total, seen = loss_total + total, seen + count
    elapsed = time.perf_counter() - started
    return {"loss": loss_total / max(seen, 1), "images": seen, "seconds": elapsed, "step": step}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, *,
             device: torch.device, precision: Precision | None = None, channels_last: bool = False,
             context: DistContext | None = None) -> dict[str, Any]:
    """Top-1, top-5, mean cross-entropy and the confusion matrix (rows: truth), summed over ranks. The sums stay
    on the device until the last batch (one wait for the GPU, not one a batch)."""
    model.eval()
    precision = precision or Precision(None, None)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, summed loss
    count = 0
    for images, targets in batches:
        images, targets = to_device(images, targets, device, channels_last)
        with precision.autocast(device):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, num_classes), dim=1).indices  # (N, k)
        hits = top == targets[:, None]
        sums += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(),
                             nn.functional.cross_entropy(logits, targets, reduction="sum")]).double()
        # scatter_add_, not bincount: bincount on a GPU reads the largest value back to size its output (1-D, so
        # deterministic under --deterministic too)
        confusion.scatter_add_(0, targets * num_classes + top[:, 0], torch.ones_like(targets))
        count += targets.numel()
    correct1, correct5, loss_sum = sums.tolist()
    confusion = confusion.cpu().reshape(num_classes, num_classes)
    if context is not None and context.distributed:
        correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], context)
        confusion = all_reduce_tensor(confusion, context)
    count = max(count, 1)
    per_class_total = confusion.sum(dim=1)
    per_class = (confusion.diag().double() / per_class_total.clamp(min=1)).tolist()
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count,
            "count": int(count), "per_class_accuracy": [100.0 * v for v in per_class],
            "confusion": confusion.tolist()}
