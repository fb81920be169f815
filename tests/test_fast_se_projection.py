"""An MBConv's squeeze-excitation and projection as one training operator (`effnet.fast.se_projection`)
computes its PyTorch composite's function and every gradient: the SE pool's share of the input's
gradient (and of the batch norm's scale and shift) included, which the operator adds in the
projection's input gradient instead of a pass of its own.

Float32 under Triton's interpreter when there is no GPU (the GPU check covers bf16), on tiny shapes:
channels off the tiles, several K steps, ragged maps, and the pool and weight gradient split into
several chunks per image.
"""
import pytest
import torch

from effnet.fast import bn_pointwise as bnp
from effnet.fast import se_projection as sep
from kernel_helpers import DEVICE, needs_triton, outputs_and_gradients, relative_error


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    """Tiles smaller than the tests' shapes (the interpreter's defaults are large, for whole models)."""
    monkeypatch.setattr(bnp, "_INTERPRET_TILES", (16, 16, 16, 4, 1))
    monkeypatch.setattr(sep, "_POOL_TILES", (8, 16, 4))


def _inputs(dtype: torch.dtype, shape=(3, 20, 5, 6), out_channels: int = 24, reduced: int = 5):
    """x, the projection's weight, bn2 as (scale, shift), and the SE's 1x1 convs (4-d, as the model
    holds them), scaled so that the gate varies and the pool's gradient is not negligible."""
    torch.manual_seed(41)
    channels = shape[1]
    x = torch.randn(shape, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    return (x, torch.randn(out_channels, channels, device=DEVICE) / channels ** 0.5,
            torch.rand(channels, device=DEVICE) + 0.5, torch.randn(channels, device=DEVICE) * 0.3,
            torch.randn(reduced, channels, 1, 1, device=DEVICE) * 3 / channels ** 0.5,
            torch.randn(reduced, device=DEVICE) * 0.3,
            torch.randn(channels, reduced, 1, 1, device=DEVICE) * 3 / reduced ** 0.5,
            torch.randn(channels, device=DEVICE) * 0.3)


NAMES = ["y", "mean", "var", "dx", "dweight", "dscale", "dshift", "dreduce_weight", "dreduce_bias",
         "dexpand_weight", "dexpand_bias"]


@needs_triton
def test_se_projection_equals_its_pytorch_composite():
    inputs = _inputs(torch.float32)
    assert bnp.usable(inputs[0])
    fused = outputs_and_gradients(sep.se_projection, inputs, 42)
    reference = outputs_and_gradients(sep.se_projection_reference, inputs, 42)
    for name, value, expected in zip(NAMES, fused, reference, strict=True):
        assert value.shape == expected.shape and value.dtype == expected.dtype, name
        assert relative_error(value, expected) <= 1e-5, (name, relative_error(value, expected))
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


@needs_triton
def test_se_projection_half_precision_on_a_larger_map():
    """float16 (the interpreter's half type) within rounding of the composite, on 81 pixels per image:
    several row tiles and pool chunks per image, the last ones ragged."""
    inputs = _inputs(torch.float16, shape=(2, 36, 9, 9), out_channels=40, reduced=9)
    fused = outputs_and_gradients(sep.se_projection, inputs, 43)
    reference = outputs_and_gradients(sep.se_projection_reference, inputs, 43)
    for name, value, expected in zip(NAMES, fused, reference, strict=True):
        assert value.dtype == expected.dtype and relative_error(value.float(), expected.float()) <= 3e-3, name


def test_se_projection_falls_back_to_pytorch_off_channels_last():
    x, *rest = _inputs(torch.float32)
    x = x.contiguous()
    assert not bnp.usable(x)
    for value, expected in zip(sep.se_projection(x, *rest), sep.se_projection_reference(x, *rest), strict=True):
        assert torch.equal(value, expected)


@needs_triton
def test_se_projection_operators_pass_pytorchs_operator_checks():
    """Schema, fake functions, autograd registration and AOT dispatch, as `torch.compile` relies on."""
    x, weight, scale, shift, *se = _inputs(torch.float32, shape=(2, 12, 3, 5), out_channels=8, reduced=3)
    args = (x, weight.requires_grad_(), scale, shift, *(t.flatten(1) if t.dim() == 4 else t for t in se))
    results = torch.library.opcheck(sep._forward_op, args)
    assert set(results.values()) == {"SUCCESS"}, results
