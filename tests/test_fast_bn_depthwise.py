"""The training depthwise conv with the batch norms fused at both ends (`effnet.fast.bn_depthwise`)
computes its PyTorch composite's function and gradients: the output, its batch mean and variance,
and the gradients of the input, the weight and the input's batch-norm affine map.

Float32 under Triton's interpreter when there is no GPU, with tiles smaller than the shapes: channels
off the channel block, maps ragged against the pixel tiles and the weight gradient's row bands,
stride 2 and TF "same" padding (uneven).
"""
import pytest
import torch

from effnet.fast import bn_depthwise as bnd
from effnet.fast import ops
from kernel_helpers import DEVICE, needs_triton, outputs_and_gradients, relative_error


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    monkeypatch.setattr(bnd, "_INTERPRET_TILES", (4, 8, 16, 4))
    monkeypatch.setattr(bnd, "_INTERPRET_WEIGHT_TILES", (4, 2, 4, 16, 4))


def _case(dtype, affine, kernel_size, stride, same, shape=(2, 20, 7, 9)):
    torch.manual_seed(41)
    channels = shape[1]
    x = torch.randn(shape, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE) / kernel_size
    scale = torch.rand(channels, device=DEVICE) + 0.5 if affine else None
    shift = torch.randn(channels, device=DEVICE) * 0.3 if affine else None
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
    return (x, weight, scale, shift), dict(stride=stride, padding=padding, output_size=output_size, act=affine)


def _run(function, tensors, options):
    return outputs_and_gradients(function, tensors, 42, **options)


@needs_triton
@pytest.mark.parametrize("affine, kernel_size, stride, same", [(True, 3, 1, False), (True, 5, 2, True),
                                                               (False, 3, 2, False)])
def test_bn_depthwise_equals_its_pytorch_composite(affine, kernel_size, stride, same):
    tensors, options = _case(torch.float32, affine, kernel_size, stride, same)
    assert bnd.usable(tensors[0])
    fused, reference = _run(bnd.bn_depthwise, tensors, options), _run(bnd.bn_depthwise_reference, tensors, options)
    names = ["y", "mean", "var", "dx", "dweight"] + ["dscale", "dshift"] * affine
    for name, value, expected in zip(names, fused, reference, strict=True):
        assert value.shape == expected.shape, name
        assert relative_error(value, expected) <= 1e-5, (name, relative_error(value, expected))
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("per_program", [1, 2, 3])
def test_weight_gradient_walks_several_images_per_program(monkeypatch, per_program):
    """One image per program, two and a ragged last one, or all three: the same weight gradient."""
    monkeypatch.setattr(bnd, "images_per_program", lambda *args: per_program)
    tensors, options = _case(torch.float32, True, 5, 1, False, shape=(3, 20, 6, 7))
    fused, reference = _run(bnd.bn_depthwise, tensors, options), _run(bnd.bn_depthwise_reference, tensors, options)
    assert relative_error(fused[4], reference[4]) <= 1e-5


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, channels, tiles", [
    (3, 1, 32, (4, 4, 16, 4)), (3, 1, 20, (2, 8, 16, 4)), (5, 2, 32, (2, 4, 16, 4)), (3, 1, 32, (4, 4, 16, 4, 1)),
    (5, 1, 20, (1, 8, 16, 4, 1))])
def test_bn_depthwise_forward_interior_tiles_and_warmed_taps(kernel_size, stride, channels, tiles):
    """The forward sums its taps as the inference kernel does: tiles whose taps all read inside the map load
    without masks (without a channel mask too where the channel blocks are whole: 32 channels here, not 20),
    border tiles test every tap, and a fifth tile value of 1 takes the taps in two phases (stride 1). Both kinds
    of tile occur on this 10 x 19 map; the output and its statistics are the composite's."""
    (x, weight, scale, shift), options = _case(torch.float32, True, kernel_size, stride, False,
                                               shape=(2, channels, 10, 19))
    taps = weight.flatten(1).t().contiguous()
    y, mean, var, _ = bnd._forward(x, taps, scale, shift, kernel_size, stride, options["padding"],
                                   options["output_size"], True, tiles)
    for value, expected in zip((y, mean, var), bnd.bn_depthwise_reference(x, weight, scale, shift, **options),
                               strict=True):
        assert relative_error(value, expected) <= 1e-5
    if len(tiles) == 5:
        with pytest.raises(ValueError, match="stride 1"):
            bnd._forward(x, taps, scale, shift, kernel_size, 2, (0, 0), (7, 10), True, tiles)


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, channels, tiles", [
    (3, 1, 32, (4, 4, 16, 4)), (3, 1, 20, (2, 8, 16, 4)), (5, 1, 32, (4, 8, 16, 4, 1)), (3, 2, 32, (2, 4, 16, 4)),
    (3, 1, 20, (4, 4, 16, 4, 1))])
def test_bn_depthwise_input_gradient_at_stride_1_is_the_flipped_conv_of_g(monkeypatch, kernel_size, stride, channels,
                                                                          tiles):
    """At stride 1 the input gradient convolves the written g by the flipped kernel with the forward's taps:
    interior tiles of this 10 x 19 map unmasked (no channel mask either with 32 channels), border tiles masked,
    the taps warmed in two phases with a fifth tile value of 1; at stride 2 it walks its parity classes. All
    four gradients are the composite's."""
    monkeypatch.setattr(bnd, "_tiles", lambda op, x, k, s: tiles if op != "bn_depthwise_weight_grad"
                        else (4, 2, 4, 16, 4))
    tensors, options = _case(torch.float32, True, kernel_size, stride, False, shape=(2, channels, 10, 19))
    fused, reference = _run(bnd.bn_depthwise, tensors, options), _run(bnd.bn_depthwise_reference, tensors, options)
    for name, value, expected in zip(["y", "mean", "var", "dx", "dweight", "dscale", "dshift"], fused, reference,
                                     strict=True):
        assert relative_error(value, expected) <= 1e-5, name


@needs_triton
def test_bn_depthwise_input_gradient_warms_its_taps_at_stride_1_only():
    (x, weight, scale, shift), options = _case(torch.float32, True, 3, 2, False)
    taps = weight.flatten(1).t().contiguous()
    y, mean, _, _ = bnd._forward(x, taps, scale, shift, 3, 2, options["padding"], options["output_size"], True)
    stats = torch.zeros(3, x.shape[1])
    with pytest.raises(ValueError, match="stride 1"):
        bnd._input_grad(y, stats, x, y, taps, scale, shift, 3, 2, options["padding"], True, True, (4, 8, 16, 4, 1))


@needs_triton
@pytest.mark.parametrize("frozen", ["weight", "input"])
def test_bn_depthwise_one_gradient_alone(frozen):
    """Both gradients run the weight gradient first, which writes g for the input gradient; asked for one,
    the input gradient forms g from dy and y itself, and the weight gradient writes nothing."""
    (x, weight, scale, shift), options = _case(torch.float32, True, 3, 2, True)
    grads = {}
    for function in (bnd.bn_depthwise, bnd.bn_depthwise_reference):
        x_, weight_ = x.detach().clone(), weight.detach().clone()
        (weight_ if frozen == "input" else x_).requires_grad_()
        y, mean, var = function(x_, weight_, scale, shift, **options)
        torch.manual_seed(5)
        loss = (y.float() * torch.randn(y.shape)).sum() + (mean * torch.randn(mean.shape)).sum() + var.sum()
        grads[function] = torch.autograd.grad(loss, [weight_ if frozen == "input" else x_])[0]
    fused, expected = grads.values()
    assert relative_error(fused, expected) <= 1e-5


@needs_triton
def test_bn_depthwise_half_precision():
    tensors, options = _case(torch.float16, True, 3, 2, True)
    fused, reference = _run(bnd.bn_depthwise, tensors, options), _run(bnd.bn_depthwise_reference, tensors, options)
    for index, (value, expected) in enumerate(zip(fused, reference, strict=True)):
        assert value.dtype == expected.dtype and relative_error(value.float(), expected.float()) <= 2e-3, index


def test_bn_depthwise_falls_back_to_pytorch_off_channels_last():
    (x, weight, scale, shift), options = _case(torch.float32, True, 3, 1, False)
    x = x.contiguous()
    assert not bnd.usable(x)
    for value, expected in zip(bnd.bn_depthwise(x, weight, scale, shift, **options),
                               bnd.bn_depthwise_reference(x, weight, scale, shift, **options), strict=True):
        assert torch.equal(value, expected)


def test_bn_depthwise_wants_scale_and_shift_together():
    (x, weight, scale, _), options = _case(torch.float32, True, 3, 1, False)
    with pytest.raises(ValueError, match="scale and shift together"):
        bnd.bn_depthwise(x, weight, scale, None, **options)


@needs_triton
def test_bn_depthwise_operator_passes_pytorchs_operator_checks():
    (x, weight, scale, shift), options = _case(torch.float32, True, 3, 2, True, shape=(1, 12, 5, 6))
    args = (x.requires_grad_(), weight.requires_grad_(), scale, shift, 3, 2, list(options["padding"]),
            list(options["output_size"]), True)
    results = torch.library.opcheck(bnd._forward_op, args)
    assert set(results.values()) == {"SUCCESS"}, results
