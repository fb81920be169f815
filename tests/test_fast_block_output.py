"""A fused training MBConv's last step (`effnet.fast.block_output`: bn3's affine map, stochastic depth and the
residual in one kernel, its backward in another) computes its PyTorch composite's output and gradients, draws
stochastic depth's random numbers as torchvision does, and rounds once.

Under Triton's interpreter when there is no GPU: channel counts off the tiles and off 16-byte vectors, more
than one channel block, and a backward split into several row chunks.
"""
import copy

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

import effnet
from effnet.fast import block_output as bo
from effnet.fast.fused_training import use_fused_training
from effnet.models import get_entry
from effnet.models.blocks import MBConv
from effnet.scaling import scale_by_multipliers
from kernel_helpers import DEVICE, needs_triton, randomise_batchnorm, relative_error


def _inputs(shape, dtype=torch.float32, seed=51):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)

    def rand(*size, scale=1.0, offset=0.0):
        return torch.randn(size, device=DEVICE, generator=generator) * scale + offset

    def channels_last(t):
        return t.to(dtype).contiguous(memory_format=torch.channels_last)

    channels = shape[1]
    keep = (torch.arange(shape[0], device=DEVICE) % 2 == 0).to(dtype) / 0.6  # images 1, 3, ... dropped
    return (channels_last(rand(*shape)), rand(channels, scale=0.3, offset=1.0), rand(channels, scale=0.3),
            keep, channels_last(rand(*shape)))


def _outputs_and_gradients(function, y, scale, shift, keep, shortcut):
    """out, then the gradients of y, scale, shift and shortcut (those given) for a loss weighing out at random."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (y, scale, shift, shortcut)]
    out = function(*leaves[:3], keep, leaves[3])
    weights = torch.randn(out.shape, device=DEVICE, generator=torch.Generator(device=DEVICE).manual_seed(52))
    grads = torch.autograd.grad((out.float() * weights).sum(), [t for t in leaves if t is not None])
    return [out, *grads]


@needs_triton
@pytest.mark.parametrize("shape", [(4, 24, 16, 18), (3, 20, 5, 7), (2, 136, 3, 5)])
@pytest.mark.parametrize("keep,shortcut", [(True, True), (False, True), (False, False), (True, False)])
def test_block_output_equals_its_composite(shape, keep, shortcut):
    """Float32: the output and every gradient within 1e-5 of the composite's (4 x 16 x 18 pixels of 24
    channels: two row chunks in the backward; 20 channels: 8-byte rows; 136: two channel blocks)."""
    y, scale, shift, draw, residual = _inputs(shape)
    arguments = (y, scale, shift, draw if keep else None, residual if shortcut else None)
    fused = _outputs_and_gradients(bo.block_output, *arguments)
    expected = _outputs_and_gradients(bo.block_output_reference, *arguments)
    assert type(fused[0].grad_fn).__name__ == "_BlockOutputBackward"  # the kernels ran
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    for name, value, reference in zip(["out", "dy", "dscale", "dshift", "dshortcut"], fused, expected):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
    if keep:  # a dropped image's output is its shortcut alone (or zero), its gradient of y zero
        dropped = draw == 0
        assert torch.equal(fused[0][dropped], residual[dropped] if shortcut else torch.zeros_like(y[dropped]))
        assert torch.equal(fused[1][dropped], torch.zeros_like(y[dropped]))


@needs_triton
def test_block_output_rounds_once_in_half_precision():
    """In float16 the kernel rounds the output once, where the composite rounds after the affine map, the
    draw and the sum: it is no further from the exact values than the composite is."""
    y, scale, shift, keep, shortcut = _inputs((2, 24, 9, 9), torch.float16)
    exact = bo.block_output_reference(y.double(), scale.double(), shift.double(), keep.double(), shortcut.double())
    fused = bo.block_output(y, scale, shift, keep, shortcut)
    assert fused.dtype == torch.float16
    assert relative_error(fused, exact) <= relative_error(bo.block_output_reference(y, scale, shift, keep, shortcut),
                                                          exact)


def test_block_output_falls_back_where_the_kernels_do_not_run():
    """Channels-first maps (and float64) take the composite: the same function, bit for bit."""
    y, scale, shift, keep, shortcut = _inputs((2, 8, 4, 4))
    y, shortcut = y.contiguous(), shortcut.contiguous()
    assert torch.equal(bo.block_output(y, scale, shift, keep, shortcut),
                       bo.block_output_reference(y, scale, shift, keep, shortcut))
    out = bo.block_output(y.double(), scale, shift)
    assert out.dtype == torch.float64 and out.grad_fn is None


def _residual_block(drop_path_rate: float) -> MBConv:
    """A residual block with an expansion and an SE, of a narrow B0 deep enough to have one."""
    spec = scale_by_multipliers(get_entry("efficientnet_b0").spec, depth=0.5, width=0.25, name="b0_residual")
    torch.manual_seed(0)
    model = randomise_batchnorm(effnet.create_model(spec, num_classes=10))
    block = next(m for m in model.modules() if type(m) is MBConv and m.has_skip and m.expands)
    block.drop_path = StochasticDepth(drop_path_rate, mode="row")
    return block.to(DEVICE).train()


def _output_and_gradients(block, x, seed):
    torch.manual_seed(seed)
    out = block(x)
    weights = torch.randn(out.shape, device=DEVICE, generator=torch.Generator(device=DEVICE).manual_seed(54))
    return [out, *torch.autograd.grad((out * weights).sum(), [x, *block.parameters()])]


@needs_triton
def test_fused_block_draws_stochastic_depth_as_torchvision_does():
    """A residual block at drop-path rate 0.5, batch 8: the fused block drops the same images as the plain
    one (the same random numbers), and its output and gradients equal the plain block's."""
    plain = _residual_block(0.5)
    fused = use_fused_training(copy.deepcopy(plain))
    x = torch.randn(8, plain.conv_pw.in_channels, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    expected = _output_and_gradients(plain, x, 53)
    values = _output_and_gradients(fused, x, 53)
    assert type(values[0].grad_fn).__name__ == "_BlockOutputBackward"
    dropped = [bool(torch.equal(values[0][i], x[i])) for i in range(8)]  # a dropped image passes its input through
    assert any(dropped) and not all(dropped)
    for value, reference in zip(values, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


@needs_triton
def test_fused_block_keeps_a_drop_path_of_the_callers_own():
    """A drop path that is not torchvision's StochasticDepth still runs, on bn3's output, before the residual."""
    class Halve(nn.Module):
        def forward(self, x):
            return x / 2

    plain = _residual_block(0.0)
    plain.drop_path = Halve()
    fused = use_fused_training(copy.deepcopy(plain))
    x = torch.randn(2, plain.conv_pw.in_channels, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert relative_error(fused(x), plain(x)) <= 1e-5
