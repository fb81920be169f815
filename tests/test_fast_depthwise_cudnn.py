"""The inference depthwise conv through cuDNN with one activation-and-pool pass (`effnet.fast.depthwise_cudnn`)
computes what the fused Triton kernel computes (its PyTorch reference), and a tuning file naming it for a layer
routes that layer through it, the fused model unchanged.

float32 at relative error 1e-5; bf16 within 1e-2. Without a GPU the conv is PyTorch's on the CPU and the pass
runs in Triton's interpreter.
"""
import pytest
import torch

from effnet.fast import depthwise_cudnn, ops, optimize_for_inference, tuning
from kernel_helpers import DEVICE, layer_keys, needs_triton, relative_error, spy_kwargs, tiny, tuned_and_plain

pytestmark = needs_triton


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("kernel_size, stride, same, act, pool", [
    (3, 1, False, True, True), (5, 2, False, True, True), (3, 2, True, True, True),  # "same" of an even map
    (5, 1, True, True, False), (3, 1, False, False, True), (3, 2, False, False, False)])
def test_cudnn_depthwise_equals_pytorch(kernel_size, stride, same, act, pool, dtype, bound):
    """The same function as the fused kernel's reference (`ops.depthwise` in PyTorch, which the fused kernel is held
    to in test_fast): channels-last output, float32 per-image sums."""
    torch.manual_seed(3)
    x = torch.randn(3, 40, 10, 12, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(40, 1, kernel_size, kernel_size, device=DEVICE, dtype=dtype) / kernel_size
    taps = weight.flatten(1).t().float().contiguous()  # as the fused model holds them: float32, (k * k, C)
    bias = torch.randn(40, device=DEVICE, dtype=dtype)
    expected, expected_sums = ops.depthwise(x, weight, taps, bias, stride=stride, same=same, act=act, pool=pool,
                                            use_triton=False)
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
    geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, output_size=output_size, act=act,
                    pool=pool)
    y, sums = depthwise_cudnn.depthwise_cudnn(x, taps, bias, **geometry)
    assert y.shape == expected.shape and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(y, expected) <= bound
    if pool:
        assert sums.dtype == torch.float32 and sums.shape == (3, 40)
        assert relative_error(sums, expected_sums) <= bound
    else:
        assert sums is None


def test_the_bias_is_added_by_the_activation_pass_not_by_the_conv(monkeypatch):
    """PyTorch's cuDNN conv adds a bias in an element-wise pass of its own after the library's conv (a read and a
    write of the whole output); the activation pass adds it as it loads each value, so the conv is given none."""
    biases, conv = [], ops.padded_conv2d
    monkeypatch.setattr(ops, "padded_conv2d", lambda x, weight, bias, **options: biases.append(bias) or conv(
        x, weight, bias, **options))
    x = torch.randn(2, 16, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    taps, bias = torch.randn(9, 16, device=DEVICE), torch.randn(16, device=DEVICE)
    y, _ = depthwise_cudnn.depthwise_cudnn(x, taps, bias, kernel_size=3, stride=1, padding=(1, 1), output_size=(6, 6),
                                           act=False, pool=False)
    assert biases == [None]
    weight = taps.t().reshape(16, 1, 3, 3)
    assert relative_error(y, torch.nn.functional.conv2d(x, weight, bias, padding=1, groups=16)) <= 1e-5


def test_the_pool_sums_each_image_apart():
    """A program's rows never reach into the next image: a change to one image changes its sums alone."""
    torch.manual_seed(5)
    x = torch.randn(3, 24, 9, 9, device=DEVICE).contiguous(memory_format=torch.channels_last)
    taps, bias = torch.randn(9, 24, device=DEVICE), torch.randn(24, device=DEVICE)
    geometry = dict(kernel_size=3, stride=1, padding=(1, 1), output_size=(9, 9), act=True, pool=True)
    _, sums = depthwise_cudnn.depthwise_cudnn(x, taps, bias, **geometry)
    x[1] += 1
    _, changed = depthwise_cudnn.depthwise_cudnn(x, taps, bias, **geometry)
    assert torch.equal(changed[[0, 2]], sums[[0, 2]]) and not torch.equal(changed[1], sums[1])


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_b0"])
def test_a_tuning_file_naming_cudnn_routes_those_layers_through_it(tmp_path, monkeypatch, name):
    model = tiny(name, width=0.1).to(DEVICE)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    depthwise, _ = layer_keys(model, x)
    path = tmp_path / "tuning.json"
    for key in depthwise:  # every depthwise layer, strided too
        tuning.record(path, "depthwise", key, "cudnn", (), device="test", seconds=1, default_seconds=2)
    calls = spy_kwargs(monkeypatch, depthwise_cudnn, "depthwise_cudnn")
    fast = optimize_for_inference(model, use_triton=True)
    out, expected = tuned_and_plain(fast, model, x, path)
    assert relative_error(out, expected) <= 1e-5
    assert len(calls) == len(depthwise) > 0 and {call["stride"] for call in calls} == {1, 2}


def test_a_cudnn_depthwise_entry_takes_no_tiles(tmp_path):
    path = tmp_path / "tuning.json"
    key = dict(kernel_size=5, stride=1, channels=336, height=48, width=48)
    tuning.record(path, "depthwise", key, "cudnn", (8, 8, 32, 1, 4), device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match="depthwise cudnn tiles must be 0 whole numbers"):
        tuning.load(path)
