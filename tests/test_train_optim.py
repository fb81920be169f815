"""`RMSpropTF`, the paper's optimizer, as multi-tensor operations: TensorFlow's update as its docstring writes it,
timm's RMSpropTF to rounding, the parameters without a gradient left alone, and a resumed state continuing to
the bit."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from effnet.train.optim import RMSpropTF, parameter_groups

SETTINGS = dict(lr=0.05, decay=0.9, momentum=0.9, eps=1e-3)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.LazyLinear(5))


def _gradients(model: nn.Module, step: int) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator, dtype=param.dtype)


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        _gradients(model, step)
        optimizer.step()


def _built() -> nn.Module:
    model = _model()
    model(torch.zeros(1, 3, 6, 6))  # the lazy layer's shape
    return model


def test_the_update_is_tensorflows_as_documented():
    """ms = decay ms + (1 - decay) g^2 from ms = 1; mom = momentum mom + lr g / sqrt(ms + eps); p -= mom; with L2
    weight decay added to the gradient of the decayed group, in float64 one parameter at a time."""
    model = _built()
    reference = {name: param.detach().double().clone() for name, param in model.named_parameters()}
    decayed = {name for name, param in model.named_parameters() if param.ndim > 1}
    optimizer = RMSpropTF(parameter_groups(model, 0.01), **SETTINGS)
    square = {name: torch.ones_like(p) for name, p in reference.items()}
    momentum = {name: torch.zeros_like(p) for name, p in reference.items()}
    for step in range(6):
        _gradients(model, step)
        for name, param in model.named_parameters():
            grad = param.grad.double() + (0.01 * reference[name] if name in decayed else 0)
            square[name] = 0.9 * square[name] + 0.1 * grad**2
            momentum[name] = 0.9 * momentum[name] + SETTINGS["lr"] * grad / (square[name] + 1e-3).sqrt()
            reference[name] -= momentum[name]
        optimizer.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach().double(), reference[name], rtol=1e-5, atol=1e-6)


def test_equal_to_timms_rmsproptf():
    timm_optim = pytest.importorskip("timm.optim")
    ours, theirs = _built(), _built()
    ours_optimizer = RMSpropTF(parameter_groups(ours, 1e-2), **SETTINGS)
    theirs_optimizer = timm_optim.RMSpropTF(parameter_groups(theirs, 1e-2), lr=SETTINGS["lr"], alpha=0.9,
                                            momentum=0.9, eps=1e-3)
    _steps(ours, ours_optimizer, range(8))
    _steps(theirs, theirs_optimizer, range(8))
    for mine, timm_param in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(mine, timm_param, rtol=1e-5, atol=1e-6)


def test_parameters_without_a_gradient_are_left_alone():
    model = _built()
    optimizer = RMSpropTF(model.parameters(), **SETTINGS)
    frozen = model[0].weight
    before = frozen.detach().clone()
    _gradients(model, 0)
    frozen.grad = None
    optimizer.step()
    assert torch.equal(frozen, before) and frozen not in optimizer.state
    assert all(key in optimizer.state[model[2].weight] for key in ("square_avg", "momentum_buffer"))


def test_a_resumed_state_continues_to_the_bit():
    """What `effnet train --resume` relies on: the state dict carries everything the next step reads."""
    straight, resumed = _built(), _built()
    straight_optimizer = RMSpropTF(parameter_groups(straight, 1e-3), **SETTINGS)
    _steps(straight, straight_optimizer, range(3))
    resumed.load_state_dict(straight.state_dict())
    resumed_optimizer = RMSpropTF(parameter_groups(resumed, 1e-3), **SETTINGS)
    # a copy, as a checkpoint read from disk is: the state dict holds the optimizer's own tensors
    resumed_optimizer.load_state_dict(copy.deepcopy(straight_optimizer.state_dict()))
    _steps(straight, straight_optimizer, range(3, 6))
    _steps(resumed, resumed_optimizer, range(3, 6))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_the_optimizer_benchmark_runs_on_cpu():
    """`benchmarks/optimizer_step.py` as its docstring shows it (the GPU figures come from a lease)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "optimizer_step.py"
    result = subprocess.run([sys.executable, str(script), "--host-only", "--device", "cpu", "--steps", "2",
                             "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "213 parameter tensors" in result.stdout
    assert all(label in result.stdout for label in ("effnet RMSpropTF", "timm RMSpropTF", "torch RMSprop"))
