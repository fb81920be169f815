"""The persistent pointwise kernel computes the 1x1 conv that `ops.pointwise` computes in PyTorch.

float32 at relative error 1e-5; without a GPU in Triton's interpreter (conftest sets
TRITON_INTERPRET=1), on tiny shapes whose rows, output channels and input channels all end inside
a tile, with fewer persistent programs than row tiles so that each program loops.
"""
import pytest
import torch

from effnet.fast import ops, streaming
from kernel_helpers import DEVICE, needs_triton, relative_error


def channels_last(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=DEVICE).contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("act", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_streaming_kernel_equals_pytorch(act, residual):
    torch.manual_seed(3)
    # 105 rows in 7 tiles of 16 over 3 programs; 40 output channels in 3 blocks of 16; K = 24 of 32.
    batch, in_channels, out_channels, height, width = 3, 24, 40, 5, 7
    tiles, programs = (16, 16, 4, 2, 1), 3
    assert -(-batch * height * width // tiles[0]) > programs  # every program runs the loop more than once
    x = channels_last(batch, in_channels, height, width)
    weight = torch.randn(out_channels, in_channels, 1, 1, device=DEVICE)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(out_channels, device=DEVICE)
    shortcut = channels_last(batch, out_channels, height, width) if residual else None
    expected = ops.pointwise(x, weight, weight_t, bias, act=act, residual=shortcut, use_triton=False)
    output = streaming.pointwise_streaming(x, weight_t, bias, act=act, residual=shortcut, tiles=tiles,
                                           programs=programs)
    assert output.is_contiguous(memory_format=torch.channels_last) and output.dtype == x.dtype
    assert relative_error(output, expected) <= 1e-5


@needs_triton
def test_streaming_kernel_default_tiles_equal_pytorch():
    torch.manual_seed(4)
    x = channels_last(2, 16, 4, 5)
    weight = torch.randn(24, 16, 1, 1, device=DEVICE)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(24, device=DEVICE)
    expected = ops.pointwise(x, weight, weight_t, bias, act=True, use_triton=False)
    assert relative_error(streaming.pointwise_streaming(x, weight_t, bias, act=True), expected) <= 1e-5


def test_streaming_kernel_rejects_more_input_channels_than_a_tile_holds():
    x = channels_last(1, streaming.MAX_K + 1, 2, 2)
    weight_t = torch.randn(streaming.MAX_K + 1, 16, device=DEVICE)
    with pytest.raises(ValueError, match="kernels.pointwise"):
        streaming.pointwise_streaming(x, weight_t, torch.zeros(16, device=DEVICE), act=True)


@needs_triton
@pytest.mark.parametrize("residual", [False, True])
def test_streaming_kernel_with_the_se_gate_equals_pytorch(residual):
    torch.manual_seed(5)
    # 35 pixels per image: 16-row tiles start inside one image and end in the next (rows 32-47 hold images 0 and
    # 1, rows 64-79 images 1 and 2), and the last tile ends short of its rows.
    batch, in_channels, out_channels, height, width = 4, 24, 40, 5, 7
    x = channels_last(batch, in_channels, height, width)
    weight = torch.randn(out_channels, in_channels, 1, 1, device=DEVICE)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(out_channels, device=DEVICE)
    gate = torch.rand(batch, in_channels, device=DEVICE)
    shortcut = channels_last(batch, out_channels, height, width) if residual else None
    expected = ops.pointwise(x, weight, weight_t, bias, act=False, gate=gate, residual=shortcut, use_triton=False)
    output = streaming.pointwise_streaming(x, weight_t, bias, act=False, gate=gate, residual=shortcut,
                                           tiles=(16, 16, 4, 2, 1), programs=3)
    assert relative_error(output, expected) <= 1e-5
    # The gate really is per image: another image's gate changes that image's rows only.
    other = gate.clone()
    other[2] = torch.rand(in_channels, device=DEVICE)
    changed = streaming.pointwise_streaming(x, weight_t, bias, act=False, gate=other, residual=shortcut,
                                            tiles=(16, 16, 4, 2, 1), programs=3)
    assert torch.equal(changed[[0, 1, 3]], output[[0, 1, 3]]) and not torch.equal(changed[2], output[2])


def test_streaming_kernel_with_a_gate_refuses_tiles_longer_than_an_image():
    x = channels_last(2, 16, 3, 3)
    weight_t = torch.randn(16, 16, device=DEVICE)
    gate = torch.rand(2, 16, device=DEVICE)
    with pytest.raises(ValueError, match="at most one image's 9 pixels, got 16 rows"):
        streaming.pointwise_streaming(x, weight_t, torch.zeros(16, device=DEVICE), act=False, gate=gate,
                                      tiles=(16, 16, 4, 1, 1))


@needs_triton
def test_narrow_ungated_layers_on_large_maps_take_the_streaming_kernel_by_default(monkeypatch):
    """`ops.tuned_pointwise` with no tuning file: the layers `streaming.default_for` names (ungated, at most
    DEFAULT_K input channels, DEFAULT_ROWS rows; here lowered to this test's 60) stream, the rest tile."""
    monkeypatch.setattr(streaming, "DEFAULT_ROWS", 60)
    calls = []
    original = streaming.pointwise_streaming
    monkeypatch.setattr(streaming, "pointwise_streaming", lambda *a, **k: calls.append(k) or original(*a, **k))
    torch.manual_seed(6)
    for in_channels, gated, rows_per_image, streams in ((16, False, 30, True), (32, False, 30, True),
                                                         (40, False, 30, False), (16, True, 30, False),
                                                         (16, False, 20, False)):
        x = channels_last(2, in_channels, rows_per_image // 5, 5)
        weight = torch.randn(48, in_channels, 1, 1, device=DEVICE)
        weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(48, device=DEVICE)
        gate = torch.rand(2, in_channels, device=DEVICE) if gated else None
        calls.clear()
        output = ops.tuned_pointwise(x, weight_t, bias, act=True, gate=gate)
        expected = ops.pointwise(x, weight, weight_t, bias, act=True, gate=gate, use_triton=False)
        assert relative_error(output, expected) <= 1e-5
        assert bool(calls) == streams, (in_channels, gated, rows_per_image)
