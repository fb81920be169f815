"""Optimizers: RMSProp as TensorFlow defines it, and parameter groups without decay on BN and bias."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from effnet.train.config import OPTIMIZERS, ConfigError


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow's semantics, which the EfficientNet recipe was tuned for.

    It differs from `torch.optim.RMSprop` in three ways that matter at the paper's eps = 1e-3:
    the mean square starts at 1 (not 0), eps is added *inside* the square root, and the learning
    rate is applied inside the momentum buffer (so a changing lr does not rescale past steps):

        ms  = decay * ms + (1 - decay) * g**2
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p  -= mom

    Weight decay is L2 added to the gradient, as TF adds it to the loss.
    """

    def __init__(self, params: Iterable, lr: float = 0.016, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1e-3, weight_decay: float = 0.0) -> None:
        for label, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        if not 0 <= decay < 1 or not 0 <= momentum < 1:
            raise ValueError(f"decay and momentum must be in [0, 1), got {decay} and {momentum}")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if params:
                self._update(group, params)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor]) -> None:
        """One group's update in seven multi-tensor operations (`torch._foreach_*`; eight with weight decay), each
        a few launches on a GPU, where a loop over the parameters issues eight each (B0: 1,786 a step). The
        group's "lr" is a float, or a one-element tensor on the parameters' device (`effnet.train.graphed`)."""
        for param in params:
            if not self.state[param]:
                self.state[param]["square_avg"] = torch.ones_like(param)
                self.state[param]["momentum_buffer"] = torch.zeros_like(param)
        grads = [param.grad for param in params]
        squares = [self.state[param]["square_avg"] for param in params]
        buffers = [self.state[param]["momentum_buffer"] for param in params]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        torch._foreach_mul_(squares, group["decay"])
        torch._foreach_addcmul_(squares, grads, grads, value=1 - group["decay"])
        roots = torch._foreach_add(squares, group["eps"])
        torch._foreach_sqrt_(roots)
        torch._foreach_mul_(buffers, group["momentum"])
        if isinstance(group["lr"], torch.Tensor):  # a device tensor (a CUDA graph's step): no float to read back
            ratios = torch._foreach_div(grads, roots)
            torch._foreach_mul_(ratios, group["lr"])
            torch._foreach_add_(buffers, ratios)
        else:
            torch._foreach_addcdiv_(buffers, grads, roots, value=group["lr"])
        torch._foreach_sub_(params, buffers)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay on convolution and linear weights only; BN parameters and biases (1-D) are exempt."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    rmsprop_decay: float = 0.9, eps: float = 1e-3, *,
                    capturable: bool = False) -> torch.optim.Optimizer:
    """The named optimizer over `parameter_groups`. `capturable`: one whose step a CUDA graph can hold, reading
    its learning rate from a device tensor put in its groups (`effnet.train.graphed`): SGD fused, AdamW
    capturable (its step count on the device; GPU only), RMSpropTF as it is."""
    groups = parameter_groups(model, weight_decay)
    if name == "rmsprop_tf":
        return RMSpropTF(groups, lr=lr, decay=rmsprop_decay, momentum=momentum, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=capturable or None)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, capturable=capturable)  # decay per group, from parameter_groups
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
