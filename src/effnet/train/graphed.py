"""`effnet train --cuda-graphs`: each optimizer step replayed from one CUDA graph.

An eager step costs the host the time to queue its kernels. The fused training blocks queue about a thousand a
step, and run 9 (an H200) found their loop bound by its host: 87 ms a step for 18 ms of kernels (B0, batch 128,
bf16). A captured step replays every kernel of the forward, the backward, the gradient clipping and the
optimizer's update in one launch, as `effnet bench`'s `cudagraphs` training rows time it.

What a replay cannot do, and how the loop keeps the same training:

- **One batch shape.** The graph reads the batch from fixed tensors, which each step's batch is copied into; the
  sampler drops incomplete batches, so every step of a run has the shape of the first.
- **The learning rate changes.** A Python float would be frozen into the graph, so `TrainStep` hands the optimizer
  a one-element device tensor, which `fill_` sets before each step (RMSpropTF takes a tensor rate; SGD runs fused
  and AdamW capturable for it: `build_optimizer(capturable=True)`); between steps the groups hold the float again,
  for checkpoints and logs.
- **No wait on the host inside the step.** No `.item()`, no float16 loss scaling (`--amp fp16` is refused), autocast
  without its cache of weight casts (a replay would not redo the casts).
- **Lazy initialisation stays out of the graph.** The first `eager_steps` steps run eagerly, each on its own batch
  (real steps), on a side stream, as PyTorch's whole-network capture asks: cuDNN's plans, Triton's compiles and
  the optimizer's state are made there. Capturing records the next step without running it; the replay runs it.
- **Random numbers** (dropout, stochastic depth) come from PyTorch's CUDA generator, whose offset a replay
  advances: each step draws anew, though not the numbers an eager run would draw.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from effnet.train.engine import Precision


class TrainStep:
    """One optimizer step as a CUDA graph can hold it: forward, backward, clipping and the optimizer's update, the
    learning rate read from a device tensor. Calling it runs the step eagerly (any device) and returns the batch's
    summed loss, a float32 tensor on the device. The gradients are not zeroed here: a caller running it eagerly sets
    them to None first, and a captured one lets each replay write them afresh."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, *,
                 precision: Precision, device: torch.device, clip_grad_norm: float | None = None) -> None:
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.precision, self.device, self.clip_grad_norm = precision, torch.device(device), clip_grad_norm
        self.rate = torch.zeros((), dtype=torch.float32, device=self.device)
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def set_rate(self, lr: float) -> None:
        """The learning rate of the next step: the groups' floats (checkpoints, logs) and the device tensor."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.rate.fill_(lr)

    @contextlib.contextmanager
    def rate_in_groups(self) -> Iterator[None]:
        """The device tensor in the optimizer's groups while a step runs or is captured, the floats after."""
        floats = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate
        try:
            yield
        finally:
            for group, lr in zip(self.optimizer.param_groups, floats):
                group["lr"] = lr

    def run(self, images: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        """One eager step at learning rate `lr`: the gradients set to None, then the step."""
        self.set_rate(lr)
        self.optimizer.zero_grad(set_to_none=True)
        return self(images, targets)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.rate_in_groups():
            with self.precision.autocast(self.device, cache=False):
                loss = self.criterion(self.model(images), targets)
            loss.backward()
            if self.clip_grad_norm:
                nn.utils.clip_grad_norm_(self.parameters, self.clip_grad_norm)
            self.optimizer.step()
        return loss.detach().float() * images.shape[0]


class GraphedStep:
    """`TrainStep` replayed from a CUDA graph after `eager_steps` eager ones (module docstring). Call it with each
    step's batch and learning rate; it returns that step's summed loss (a tensor of its own)."""

    def __init__(self, step: TrainStep, *, eager_steps: int = 3) -> None:
        if step.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; got {step.device.type}")
        self.step, self.eager_left = step, eager_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.images = self.targets = self.loss = None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        if self.graph is None and self.eager_left > 0:
            self.eager_left -= 1
            return self._eager(images, targets, lr)
        self.step.set_rate(lr)
        if self.graph is None:
            self._capture(images, targets)
        elif images.shape != self.images.shape or targets.shape != self.targets.shape:
            raise ValueError(f"this run's CUDA graph was captured for batches of {tuple(self.images.shape)}, got "
                             f"{tuple(images.shape)}")
        self.images.copy_(images)
        self.targets.copy_(targets)
        self.graph.replay()
        return self.loss.clone()

    def _eager(self, images: torch.Tensor, targets: torch.Tensor, lr: float) -> torch.Tensor:
        current = torch.cuda.current_stream(self.step.device)
        side = torch.cuda.Stream(device=self.step.device)
        side.wait_stream(current)  # the batch's copy
        with torch.cuda.stream(side):
            loss = self.step.run(images, targets, lr)
        current.wait_stream(side)
        loss.record_stream(current)  # read there later: its memory is not the side stream's to reuse before
        return loss

    def _capture(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images.clone(), targets.clone()
        self.step.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates them in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.step(self.images, self.targets)
