"""The inference depthwise conv as a window sliding down the rows (`effnet.fast.depthwise_sliding`) computes what the
fused Triton kernel computes (its PyTorch reference), at stride 1 and 2, and a tuning file naming it for a layer
routes that layer through it, the fused model unchanged.

float32 at relative error 1e-5; bf16 within 1e-2. Without a GPU the kernel runs in Triton's interpreter.
"""
import pytest
import torch

from effnet.fast import depthwise_sliding, ops, optimize_for_inference, tuning
from kernel_helpers import DEVICE, layer_keys, needs_triton, relative_error, spy_kwargs, tiny, tuned_and_plain

pytestmark = needs_triton


@pytest.mark.parametrize("kernel_size, stride, same, act, pool, channels, tiles, dtype, bound", [
    # several bands and column blocks, every channel block whole; in float32 and bf16
    (5, 1, False, True, True, 32, (8, 16, 4, 1), torch.float32, 1e-5),
    (5, 1, False, True, True, 32, (8, 16, 4, 1), torch.bfloat16, 1e-2),
    (5, 1, False, True, True, 32, (8, 16, 4, 1, 1), torch.float32, 1e-5),  # each row loaded a step ahead
    (3, 1, False, True, True, 40, (8, 16, 16, 1), torch.float32, 1e-5),  # one band; the last channel block masked
    # "same" padding; a band of 3 rows, its warm-up longer than it; loaded ahead (rows past the map clamped)
    (5, 1, True, False, True, 40, (8, 32, 3, 1, 1), torch.float32, 1e-5),
    (3, 1, True, True, False, 24, None, torch.bfloat16, 1e-2),  # the default tiles
    (1, 1, False, True, True, 16, (8, 16, 4, 1), torch.float32, 1e-5),  # a 1 x 1 kernel: no warm-up
    # stride 2: two input rows a step, every other column; TF "same" padding one more after than before
    (5, 2, False, True, True, 40, (4, 16, 2, 1), torch.float32, 1e-5),
    (5, 2, True, True, True, 32, (4, 16, 3, 1, 1), torch.float32, 1e-5),
    (3, 2, True, True, True, 24, None, torch.bfloat16, 1e-2),
])
def test_sliding_depthwise_equals_pytorch(kernel_size, stride, same, act, pool, channels, tiles, dtype, bound):
    """The same function as the fused kernel's reference (`ops.depthwise` in PyTorch, which the fused kernel is held
    to in test_fast): channels-last output, float32 per-image sums, on a map whose rows and columns are no multiple
    of the tiles (masked columns, a short last band)."""
    torch.manual_seed(3)
    x = torch.randn(2, channels, 11, 13, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE, dtype=dtype) / kernel_size
    taps = weight.flatten(1).t().float().contiguous()  # as the fused model holds them: float32, (k * k, C)
    bias = torch.randn(channels, device=DEVICE, dtype=dtype)
    expected, expected_sums = ops.depthwise(x, weight, taps, bias, stride=stride, same=same, act=act, pool=pool,
                                            use_triton=False)
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
    y, sums = depthwise_sliding.depthwise_sliding(x, taps, bias, kernel_size=kernel_size, stride=stride,
                                                  padding=padding, output_size=output_size, act=act, pool=pool,
                                                  tiles=tiles)
    assert y.shape == expected.shape and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(y, expected) <= bound
    if pool:
        assert sums.dtype == torch.float32 and sums.shape == (2, channels)
        assert relative_error(sums, expected_sums) <= bound
    else:
        assert sums is None


@pytest.mark.parametrize("stride", [1, 2])
def test_inside_columns_load_unmasked_and_agree_with_the_edges(stride):
    """A map wide enough for column blocks whose taps all lie inside (the unmasked loop) beside edge blocks (the
    masked one): one output, equal to PyTorch's."""
    torch.manual_seed(4)
    x = torch.randn(1, 32, 6, 40 * stride, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 1, 5, 5, device=DEVICE) / 5
    taps, bias = weight.flatten(1).t().contiguous(), torch.randn(32, device=DEVICE)
    expected, expected_sums = ops.depthwise(x, weight, taps, bias, stride=stride, same=False, pool=True,
                                            use_triton=False)
    output_size, padding = ops.conv_geometry(x, 5, stride, False)
    for tiles in ((8, 32, 8, 1), (8, 32, 8, 1, 1)):  # and each row loaded a step ahead
        y, sums = depthwise_sliding.depthwise_sliding(x, taps, bias, kernel_size=5, stride=stride, padding=padding,
                                                      output_size=output_size, act=True, pool=True, tiles=tiles)
        assert relative_error(y, expected) <= 1e-5 and relative_error(sums, expected_sums) <= 1e-5


@pytest.mark.parametrize("kernel_size, stride, tiles, message", [
    (3, 3, None, "is for stride 1 or 2 and kernels up to 5x5 \\(as wide as the stride\\), got stride 3 and a 3x3"),
    (7, 1, None, "got stride 1 and a 7x7 kernel"),
    (1, 2, None, "got stride 2 and a 1x1 kernel"),
    (3, 1, (12, 32, 8, 4), "takes blocks and warps powers of two, got tiles [12, 32, 8, 4]"),
])
def test_what_the_kernel_cannot_run_is_one_clear_error(kernel_size, stride, tiles, message):
    x = torch.zeros(1, 16, 8, 8, device=DEVICE).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        depthwise_sliding.depthwise_sliding(x, torch.zeros(kernel_size ** 2, 16, device=DEVICE),
                                            torch.zeros(16, device=DEVICE), kernel_size=kernel_size, stride=stride,
                                            padding=(1, 1), output_size=(8, 8), act=True, pool=False, tiles=tiles)


def test_a_tuning_file_naming_the_sliding_kernel_routes_those_layers_through_it(tmp_path, monkeypatch):
    model = tiny("tf_efficientnet_b0", width=0.1).to(DEVICE)  # TF "same" padding
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    depthwise, _ = layer_keys(model, x)
    path = tmp_path / "tuning.json"
    for key in depthwise:  # every depthwise layer, strided too
        tuning.record(path, "depthwise", key, "sliding", (8, 16, 4, 1, 1), device="test", seconds=1,
                      default_seconds=2)
    calls = spy_kwargs(monkeypatch, depthwise_sliding, "depthwise_sliding")
    fast = optimize_for_inference(model, use_triton=True)
    out, expected = tuned_and_plain(fast, model, x, path)
    assert relative_error(out, expected) <= 1e-5
    assert len(calls) == len(depthwise) > 0 and {call["stride"] for call in calls} == {1, 2}


@pytest.mark.parametrize("key, tiles, message", [
    (dict(kernel_size=7, stride=2, channels=96, height=112, width=112), [16, 32, 16, 4],
     "the sliding depthwise kernel is for stride 1 or 2 and kernels up to 5x5 \\(as wide as the stride\\), got "
     "stride 2 and a 7x7"),
    (dict(kernel_size=5, stride=1, channels=240, height=28, width=28), [16, 32, 16],
     "depthwise sliding tiles must be 4 or 5 whole numbers"),
    (dict(kernel_size=5, stride=1, channels=240, height=28, width=28), [16, 32, 16, 3],
     "takes blocks and warps powers of two, got tiles \\[16, 32, 16, 3\\]"),
])
def test_a_sliding_entry_the_kernel_cannot_run_is_refused_when_the_file_is_read(tmp_path, key, tiles, message):
    path = tmp_path / "tuning.json"
    tuning.record(path, "depthwise", key, "sliding", tiles, device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match=message):
        tuning.load(path)
