"""The training depthwise conv's passes on tensor cores (`effnet.fast.bn_depthwise_banded`: the forward, the input
gradient and the weight gradient), where a tuning file names them for a layer shape: the same output,
statistics and gradients as the PyTorch composite, any pass alone or all three, the Triton kernels doing the
rest; TF "same" padding too. Float32 under Triton's interpreter when there is no GPU (exact float32 products)."""
import pytest
import torch

from effnet.fast import bn_depthwise as bnd
from effnet.fast import bn_depthwise_banded as bdb
from effnet.fast import ops, tuning
from kernel_helpers import DEPTHWISE_FORM_FUNCTIONS as FUNCTIONS
from kernel_helpers import DEPTHWISE_PASSES as PASSES
from kernel_helpers import DEVICE, depthwise_training_case, needs_triton, outputs_and_gradients, relative_error
from kernel_helpers import small_depthwise_tiles  # noqa: F401 - the fixture every test here uses
from kernel_helpers import spy_calls

pytestmark = pytest.mark.usefixtures("small_depthwise_tiles")


def _case(affine, kernel_size, stride, same, shape=(2, 20, 7, 9)):
    return depthwise_training_case(affine, kernel_size, stride, same, 45, shape)


def _spy(monkeypatch):
    """The passes of `bn_depthwise_banded` called, in order."""
    return spy_calls(monkeypatch, bdb, FUNCTIONS.values())


@needs_triton
@pytest.mark.parametrize("passes", list(PASSES))
@pytest.mark.parametrize("affine, kernel_size, stride, same", [(True, 3, 1, False), (True, 5, 1, True),
                                                               (False, 5, 1, False), (True, 3, 2, True)])
def test_banded_passes_equal_the_composite(tmp_path, monkeypatch, passes, affine, kernel_size, stride, same):
    """Each pass on the banded kernels where the tuning file says so (the input gradient on the g the banded
    weight gradient's pass or the Triton kernel wrote; strided, the transposed conv): output, statistics and every
    gradient within 1e-5 of the composite."""
    tensors, options = _case(affine, kernel_size, stride, same)
    expected = outputs_and_gradients(bnd.bn_depthwise_reference, tensors, 46, **options)
    x = tensors[0]
    key = dict(kernel_size=kernel_size, stride=stride, channels=x.shape[1], height=x.shape[2], width=x.shape[3])
    path = tmp_path / "tuning.json"
    for op in PASSES[passes]:
        tuning.record(path, op, key, "banded", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    calls = _spy(monkeypatch)
    fused = outputs_and_gradients(bnd.bn_depthwise, tensors, 46, **options)
    assert calls == [FUNCTIONS[op] for op in PASSES[passes]]
    names = ["y", "mean", "var", "dx", "dweight"] + ["dscale", "dshift"] * affine
    for name, value, reference in zip(names, fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


def test_a_banded_weight_gradient_is_for_3x3_and_5x5(tmp_path):
    key = dict(kernel_size=7, stride=2, channels=8, height=8, width=8)
    path = tmp_path / "tuning.json"
    for op in ("bn_depthwise", "bn_depthwise_input_grad"):  # any kernel size
        tuning.record(path, op, key, "banded", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    bad = tmp_path / "bad.json"
    tuning.record(bad, "bn_depthwise_weight_grad", key, "banded", [], device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match="banded weight gradient is for 3x3 and 5x5"):
        tuning.use(bad)


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, same, shape, tiles", [
    (3, 1, False, (2, 20, 9, 7), None),
    (5, 2, True, (2, 12, 11, 10), None),               # TF "same": one more pixel of padding after than before
    (3, 1, False, (1, 16, 6, 40), (16, 16, 16, 4)),    # 40 columns in tiles of 14 whole outputs
    (3, 2, False, (2, 8, 12, 33), (32, 16, 8, 4)),     # 17 outputs a row in tiles of 15
])
def test_banded_weight_gradient_equals_pytorchs(kernel_size, stride, same, shape, tiles):
    """Chunks of rows that end inside an image, column tiles, channels off the block."""
    torch.manual_seed(47)
    x = torch.randn(shape, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(shape[1], 1, kernel_size, kernel_size, device=DEVICE, requires_grad=True)
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
    y = torch.nn.functional.conv2d(ops.pad_for_conv(x, kernel_size, stride, same), weight, stride=stride,
                                   groups=shape[1])
    g = torch.randn_like(y).contiguous(memory_format=torch.channels_last)
    expected = torch.autograd.grad(y, weight, g)[0].flatten(1).t()
    assert relative_error(bdb.weight_grad(g, x.detach(), kernel_size, stride, padding, tiles), expected) <= 1e-5


@needs_triton
@pytest.mark.parametrize("kernel_size, same, shape, tiles", [
    (3, False, (2, 20, 9, 7), None),
    (5, True, (2, 12, 11, 10), None),                # TF "same": one more pixel of padding after than before
    (3, False, (1, 16, 6, 70), (16, 16, 16, 4)),     # 70 columns in tiles of 28 whole ones
    (5, False, (2, 8, 12, 33), (16, 16, 8, 4)),      # an odd width in tiles of 26
])
def test_banded_transposed_conv_equals_pytorchs_input_gradient(kernel_size, same, shape, tiles):
    """The strided input gradient: g's rows that land on each input row (every other one), by the banded taps."""
    torch.manual_seed(48)
    x = torch.randn(shape, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(shape[1], 1, kernel_size, kernel_size, device=DEVICE)
    _, padding = ops.conv_geometry(x, kernel_size, 2, same)
    y = torch.nn.functional.conv2d(ops.pad_for_conv(x, kernel_size, 2, same), weight, stride=2, groups=shape[1])
    g = torch.randn_like(y).contiguous(memory_format=torch.channels_last)
    expected = torch.autograd.grad(y, x, g)[0]
    da = bdb.transposed_conv(g, weight.flatten(1).t().contiguous(), tuple(shape[2:]), kernel_size, 2, padding, tiles)
    assert da.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(da, expected) <= 1e-5
