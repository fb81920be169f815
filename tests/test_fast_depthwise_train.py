"""The training depthwise conv (Triton forward, input and weight gradients) computes F.conv2d's
function and gradients, alone and inside a training model.

Float32 under Triton's interpreter when there is no GPU, on tiny shapes: channels off the channel
block (masked tails), maps ragged against the tiles and the weight gradient's row bands.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effnet.fast.depthwise_train import TritonDepthwiseConv2d, input_grad, use_triton_depthwise, weight_grad
from effnet.models.layers import SameConv2d
from kernel_helpers import DEVICE, graph_recorder, needs_triton, relative_error, tiny


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, same, shape", [(3, 1, False, (2, 24, 7, 9)),
                                                              (5, 1, True, (2, 20, 8, 9)),
                                                              (5, 2, True, (2, 20, 9, 8)),
                                                              (3, 2, False, (2, 24, 9, 8))])
def test_depthwise_forward_and_gradients_equal_pytorch(kernel_size, stride, same, shape):
    torch.manual_seed(11)
    channels = shape[1]
    conv_type = SameConv2d if same else nn.Conv2d
    # A bias on the TF "same" conv (added in PyTorch after the kernel).
    reference = conv_type(channels, channels, kernel_size, stride, 0 if same else kernel_size // 2,
                          groups=channels, bias=same).to(DEVICE)
    triton_conv = use_triton_depthwise(copy.deepcopy(reference))
    assert isinstance(triton_conv, TritonDepthwiseConv2d) and triton_conv.same == same
    x = _channels_last(torch.randn(shape, device=DEVICE)).requires_grad_()
    y_ref = reference(x)
    y = triton_conv(x)
    assert y.shape == y_ref.shape and relative_error(y, y_ref) <= 1e-5
    upstream = torch.randn_like(y_ref)
    dx_ref, *dparams_ref = torch.autograd.grad(y_ref, (x, *reference.parameters()), upstream)
    dx, *dparams = torch.autograd.grad(y, (x, *triton_conv.parameters()), upstream)
    assert dx.shape == dx_ref.shape and relative_error(dx, dx_ref) <= 1e-5
    for grad, expected in zip(dparams, dparams_ref, strict=True):  # weight (and bias)
        assert grad.shape == expected.shape and relative_error(grad, expected) <= 1e-5


@needs_triton
@pytest.mark.parametrize("tap_major", [0, 1])
def test_depthwise_gradient_kernels_with_small_tiles(tap_major):
    """Tiles smaller than the map and the channels: several tiles, row bands and channel blocks per
    image, each ragged (the default tiles under the interpreter are large); uneven padding."""
    torch.manual_seed(13)
    kernel_size, stride, padding = 3, 2, (0, 1)
    x = _channels_last(torch.randn(1, 20, 9, 9, device=DEVICE)).requires_grad_()
    weight = torch.randn(20, 1, kernel_size, kernel_size, device=DEVICE, requires_grad=True)
    y_ref = F.conv2d(F.pad(x, [1, 1, 0, 0]), weight, stride=stride, groups=20)  # (1, 20, 4, 5)
    upstream = _channels_last(torch.randn_like(y_ref))
    dx_ref, dw_ref = torch.autograd.grad(y_ref, (x, weight), upstream)
    taps = weight.detach().flatten(1).t().contiguous()
    dx = input_grad(upstream, taps, (9, 9), kernel_size=kernel_size, stride=stride, padding=padding,
                    tiles=(4, 4, 16, 4))
    dw = weight_grad(x.detach(), upstream, kernel_size=kernel_size, stride=stride, padding=padding,
                     tiles=(3, 1, 2, 16, 4, tap_major))
    assert relative_error(dx, dx_ref) <= 1e-5 and relative_error(dw, dw_ref) <= 1e-5


@needs_triton
@pytest.mark.parametrize("kernel_size, padding, size", [(3, (1, 1), (9, 8)), (5, (1, 2), (8, 11)), (3, (0, 1), (7, 7))])
def test_stride_two_input_gradient_by_parity_equals_pytorch(kernel_size, padding, size):
    """The parity kernel (each program one parity of input pixels, only the taps that reach them):
    odd and even maps, even and odd padding on each side, several tiles of each parity."""
    torch.manual_seed(16)
    height, width = size
    x = _channels_last(torch.randn(2, 20, height, width, device=DEVICE)).requires_grad_()
    weight = torch.randn(20, 1, kernel_size, kernel_size, device=DEVICE)
    out_h = (height + 2 * padding[0] - kernel_size) // 2 + 1
    out_w = (width + 2 * padding[1] - kernel_size) // 2 + 1
    # PyTorch's conv with the same top/left padding and the output size the kernels take.
    padded = F.pad(x, [padding[1], padding[1], padding[0], padding[0]])
    y_ref = F.conv2d(padded, weight, stride=2, groups=20)[:, :, :out_h, :out_w]
    upstream = _channels_last(torch.randn_like(y_ref))
    (dx_ref,) = torch.autograd.grad(y_ref, x, upstream)
    taps = weight.flatten(1).t().contiguous()
    dx = input_grad(upstream, taps, size, kernel_size=kernel_size, stride=2, padding=padding, tiles=(2, 2, 16, 4, 1))
    assert relative_error(dx, dx_ref) <= 1e-5


def test_parity_tiles_are_refused_for_stride_one():
    x = _channels_last(torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match="parity variant is for stride 2"):
        input_grad(x, torch.randn(9, 8), (5, 5), kernel_size=3, stride=1, padding=(1, 1), tiles=(4, 4, 16, 4, 1))


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(3)  # the same dropout and drop-path draws for both models
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@needs_triton
def test_triton_depthwise_model_keeps_loss_gradients_and_keys():
    """The tiny model at width 0.1 in training mode (dropout, drop-path): every depthwise kind (3x3
    and 5x5, strides 1 and 2, 8-144 channels) through the kernels, in seconds under the interpreter.
    (The TF-padded tiny model's gradients are ~10x more sensitive to rounding: its "same" padding
    is checked on the single conv above.)

    Its BatchNorms normalise with their running statistics (so one image will do): batch statistics
    over the last stages' few values (1 x 1 maps) are so ill-conditioned that at batch 2 the plain
    model's gradients in NCHW and in channels-last already differ by up to 3e-4; with frozen
    statistics they lie ~5e-6 apart, as do the Triton model's.
    """
    reference = tiny(width=0.1).train().to(DEVICE, memory_format=torch.channels_last)
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    model = use_triton_depthwise(copy.deepcopy(reference))
    swapped = [m for m in model.modules() if isinstance(m, TritonDepthwiseConv2d)]
    assert len(swapped) == sum(len(stage) for stage in reference.blocks)
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = _channels_last(torch.randn(1, 3, 32, 32, device=DEVICE))
    y = torch.randint(0, 10, (1,), device=DEVICE)
    loss_ref, grads_ref = _train_step(reference, x, y)
    loss, grads = _train_step(model, x, y)
    assert torch.allclose(loss, loss_ref, rtol=1e-4)
    assert grads.keys() == grads_ref.keys()
    assert relative_error(torch.cat([grads[n].flatten() for n in grads_ref]),
                          torch.cat([g.flatten() for g in grads_ref.values()])) <= 1e-4


def test_triton_depthwise_falls_back_to_pytorch_and_keeps_other_convs():
    """Contiguous (NCHW) input: F.conv2d, whatever the device. Non-depthwise convs stay."""
    torch.manual_seed(12)
    model = nn.Sequential(nn.Conv2d(4, 8, 1), SameConv2d(8, 8, 5, 2, 0, groups=8, bias=True),
                          nn.Conv2d(8, 8, 3, padding=1, groups=2))
    reference = copy.deepcopy(model)
    depthwise = model[1]
    assert use_triton_depthwise(model) is model
    assert [type(m) for m in model] == [nn.Conv2d, TritonDepthwiseConv2d, nn.Conv2d]
    assert model[1].weight is depthwise.weight and model[1].bias is depthwise.bias  # shared, not copied
    x = torch.randn(1, 4, 9, 8)
    assert relative_error(model(x), reference(x)) <= 1e-6


def test_use_triton_depthwise_rejects_non_modules():
    with pytest.raises(ValueError, match="needs an nn.Module"):
        use_triton_depthwise({"weight": torch.zeros(1)})


def test_bench_offers_the_triton_depthwise_training_candidate_only_when_asked():
    from effnet.bench.candidates import build_candidates

    assert "effnet-tdw" not in [c.name for c in build_candidates("efficientnet_b0", ("effnet",)).items]
    candidates = build_candidates("efficientnet_b0", ("effnet",), triton_depthwise=True)
    (candidate,) = [c for c in candidates.items if c.name == "effnet-tdw"]
    assert candidate.tasks == ("training",)
    model = candidate.build(torch.device("cpu"), torch.float32, torch.channels_last)
    assert any(isinstance(m, TritonDepthwiseConv2d) for m in model.modules())
    assert not any(isinstance(m, TritonDepthwiseConv2d) for m in candidates.reference.modules())


@needs_triton
def test_depthwise_operators_pass_pytorchs_operator_checks():
    """Schema, fake (meta) functions, autograd registration and AOT dispatch of the three custom ops,
    as `torch.compile` relies on them."""
    from effnet.fast.depthwise_train import _depthwise_conv_op, _input_grad_op, _weight_grad_op

    torch.manual_seed(14)
    x = _channels_last(torch.randn(2, 12, 7, 9, device=DEVICE))
    taps = torch.randn(25, 12, device=DEVICE)
    dy = _channels_last(torch.randn(2, 12, 4, 5, device=DEVICE))
    for op, args in ((_depthwise_conv_op, (x, taps, 5, 2, [2, 2], [4, 5])),
                     (_input_grad_op, (dy, taps, 5, 2, [2, 2], [7, 9])),
                     (_weight_grad_op, (x, dy, 5, 2, [2, 2]))):
        results = torch.library.opcheck(op, args)
        assert set(results.values()) == {"SUCCESS"}, (op, results)


@needs_triton
def test_compiled_training_runs_the_kernels_in_one_graph():
    """`torch.compile(fullgraph=True)` traces a depthwise + BN + SiLU stack (3x3 and TF-"same" 5x5
    stride 2) without a graph break: the forward graph calls the Triton forward operator, the backward
    graph both gradient operators, and the compiled gradients equal the plain PyTorch ones."""
    backend, graphs = graph_recorder()
    torch.manual_seed(15)
    reference = nn.Sequential(nn.Conv2d(12, 12, 3, 1, 1, groups=12, bias=False), nn.BatchNorm2d(12), nn.SiLU(),
                              SameConv2d(12, 12, 5, 2, 0, groups=12, bias=False), nn.BatchNorm2d(12),
                              nn.SiLU()).to(DEVICE)
    model = use_triton_depthwise(copy.deepcopy(reference))
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x = _channels_last(torch.randn(2, 12, 7, 9, device=DEVICE))
    x_ref, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y = reference(x_ref), compiled(x_compiled)
    assert "effnet.depthwise_conv.default" in graphs["forward"]
    upstream = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad(y_ref, (x_ref, *reference.parameters()), upstream)
    grads = torch.autograd.grad(y, (x_compiled, *model.parameters()), upstream)
    assert "effnet.depthwise_conv_input_grad.default" in graphs["backward"]
    assert "effnet.depthwise_conv_weight_grad.default" in graphs["backward"]
    assert relative_error(y, y_ref) <= 1e-5
    for grad, expected in zip(grads, grads_ref, strict=True):
        assert relative_error(grad, expected) <= 1e-5
    # Under bf16 autocast, as mixed-precision training runs it: still one graph through the kernels.
    graphs.clear()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        y = compiled(x.clone().requires_grad_())
    assert y.dtype == torch.bfloat16 and "effnet.depthwise_conv.default" in graphs["forward"]
