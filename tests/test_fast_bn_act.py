"""The stem's and head's training batch norm and SiLU in Triton passes (`effnet.fast.bn_act`) compute what
`act(bn(y))` computes: output, the gradients of y, the weight and the bias, and the running statistics, in float32
held to a float64 run of the layers (1e-5); elsewhere the layers themselves run. A fused training model takes
them for its stem and head and keeps its keys and evaluation forward."""
import copy

import pytest
import torch
from torch import nn

import effnet
from effnet.fast import bn_act
from effnet.fast.fused_training import FusedTrainingEfficientNet, use_fused_training
from kernel_helpers import DEVICE, needs_triton, relative_error, spy_calls, tiny

pytestmark = needs_triton


def _bn(channels: int) -> nn.BatchNorm2d:
    torch.manual_seed(7)
    bn = nn.BatchNorm2d(channels, momentum=0.2).to(DEVICE)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_(), bn.running_var.uniform_(1, 2)
    return bn


def _run(function, bn: nn.BatchNorm2d, y: torch.Tensor, g: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """Output, the gradients of y, weight and bias, and the running statistics after one training forward."""
    bn = copy.deepcopy(bn).to(dtype).train()
    y = y.to(dtype).detach().requires_grad_()
    out = function(bn, nn.SiLU(), y)
    grads = torch.autograd.grad((out * g.to(dtype)).sum(), [y, bn.weight, bn.bias])
    return [t.double() for t in (out, *grads, bn.running_mean, bn.running_var)]


@pytest.mark.parametrize("offset", [0.0, 5.0])  # a mean five times the spread: the sums' cancellation shows
def test_batch_norm_act_trains_as_the_layers(monkeypatch, offset):
    torch.manual_seed(8)
    y = (torch.randn(3, 40, 9, 11, device=DEVICE) + offset).contiguous(memory_format=torch.channels_last)
    g = torch.randn(y.shape, device=DEVICE, dtype=torch.float64)
    bn = _bn(40)
    expected = _run(lambda b, a, x: a(b(x)), bn, y, g, torch.float64)
    calls = spy_calls(monkeypatch, bn_act.bdc, ["statistics", "output_gradient"])
    values = _run(bn_act.batch_norm_act, bn, y, g, torch.float32)
    assert calls == ["statistics", "output_gradient"]  # the Triton passes ran, both ways
    names = ["output", "dy", "dweight", "dbias", "running_mean", "running_var"]
    for name, value, reference in zip(names, values, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, name


def test_batch_norm_act_runs_the_layers_where_the_passes_do_not_apply(monkeypatch):
    """Evaluation, no autograd, another activation, channels-first maps: the layers themselves, bit for bit."""
    statistics = spy_calls(monkeypatch, bn_act.bdc, ["statistics"])
    y = torch.randn(2, 16, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    bn = _bn(16)
    assert torch.equal(bn_act.batch_norm_act(bn.eval(), nn.SiLU(), y), nn.SiLU()(bn(y)))
    bn.train()
    with torch.no_grad():
        assert torch.equal(bn_act.batch_norm_act(copy.deepcopy(bn), nn.SiLU(), y), nn.SiLU()(copy.deepcopy(bn)(y)))
    assert torch.equal(bn_act.batch_norm_act(copy.deepcopy(bn), nn.ReLU6(), y), nn.ReLU6()(copy.deepcopy(bn)(y)))
    planar = y.contiguous()
    assert torch.equal(bn_act.batch_norm_act(copy.deepcopy(bn), nn.SiLU(), planar),
                       nn.SiLU()(copy.deepcopy(bn)(planar)))
    assert not statistics


def test_a_fused_training_classifier_takes_the_passes_for_its_stem_and_head(monkeypatch):
    plain = tiny().to(DEVICE)
    fused = use_fused_training(copy.deepcopy(plain))
    assert type(fused) is FusedTrainingEfficientNet and list(fused.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert torch.equal(fused.eval()(x), plain.eval()(x))  # evaluation: the plain layers
    channels, statistics = [], bn_act.bdc.statistics
    monkeypatch.setattr(bn_act.bdc, "statistics", lambda y: channels.append(y.shape[1]) or statistics(y))
    fused.train()(x).sum().backward()
    assert channels == [fused.bn1.num_features, fused.bn2.num_features]
    # a features-only trunk keeps its class (its blocks still switch)
    backbone = use_fused_training(effnet.create_model("efficientnet_b0", features_only=True))
    assert type(backbone) is not FusedTrainingEfficientNet
