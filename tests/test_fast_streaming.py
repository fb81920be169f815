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
