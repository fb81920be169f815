"""The training depthwise conv's passes through cuDNN (`effnet.fast.bn_depthwise_cudnn`), where a tuning file
names them for a layer shape: the same output, statistics and gradients as the PyTorch composite, any pass alone
or all three, the Triton kernels doing the rest; and the Triton kernels where cuDNN's symmetric padding is not
the conv's.

Float32 under Triton's interpreter when there is no GPU (PyTorch's CPU convolution stands in for cuDNN: the
same `aten.convolution_backward`).
"""
import pytest
import torch

from effnet.fast import bn_depthwise as bnd
from effnet.fast import bn_depthwise_cudnn as bdc
from effnet.fast import ops, tuning
from kernel_helpers import DEPTHWISE_FORM_FUNCTIONS as FUNCTIONS
from kernel_helpers import DEPTHWISE_PASSES as PASSES
from kernel_helpers import depthwise_training_case, needs_triton, outputs_and_gradients, relative_error
from kernel_helpers import small_depthwise_tiles  # noqa: F401 - the fixture every test here uses
from kernel_helpers import spy_calls

pytestmark = pytest.mark.usefixtures("small_depthwise_tiles")


def _case(affine, kernel_size, stride, same, shape=(2, 20, 7, 9)):
    return depthwise_training_case(affine, kernel_size, stride, same, 43, shape)


def _use_cudnn(tmp_path, ops_named, x, kernel_size, stride):
    path = tmp_path / "tuning.json"
    key = dict(kernel_size=kernel_size, stride=stride, channels=x.shape[1], height=x.shape[2], width=x.shape[3])
    for op in ops_named:
        tuning.record(path, op, key, "cudnn", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)


def _spy(monkeypatch):
    """The passes of `bn_depthwise_cudnn` called, in order."""
    return spy_calls(monkeypatch, bdc, FUNCTIONS.values())


@needs_triton
@pytest.mark.parametrize("passes", ["forward", "weight", "input", "all"])
@pytest.mark.parametrize("affine, kernel_size, stride", [(True, 3, 1), (True, 5, 2), (False, 3, 2)])
def test_cudnn_gradients_equal_the_composite(tmp_path, monkeypatch, passes, affine, kernel_size, stride):
    """Each pass through cuDNN where the tuning file says so (the others Triton's; the input gradient on the g
    the cuDNN weight gradient's pass or the Triton kernel wrote): output, statistics and every gradient within
    1e-5 of the composite."""
    tensors, options = _case(affine, kernel_size, stride, False)
    expected = outputs_and_gradients(bnd.bn_depthwise_reference, tensors, 44, **options)
    _use_cudnn(tmp_path, PASSES[passes], tensors[0], kernel_size, stride)
    calls = _spy(monkeypatch)
    fused = outputs_and_gradients(bnd.bn_depthwise, tensors, 44, **options)
    assert calls == [FUNCTIONS[op] for op in PASSES[passes]]
    names = ["y", "mean", "var", "dx", "dweight"] + ["dscale", "dshift"] * affine
    for name, value, reference in zip(names, fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, shape, expected_calls", [
    (3, 1, (2, 20, 7, 9), ["weight_grad"]),
    (5, 1, (2, 20, 7, 9), ["forward", "weight_grad", "input_grad"]),
    (5, 2, (2, 20, 7, 9), ["forward", "input_grad"]),  # a 5 x 5 stride-2 weight gradient under 28 px: Triton's
    (5, 2, (1, 16, 28, 28), ["forward", "weight_grad", "input_grad"]),
])
def test_on_a_gpu_without_a_tuning_entry_the_passes_run_8_timed_faster_take_cudnn(monkeypatch, kernel_size, stride,
                                                                                  shape, expected_calls):
    """With no tuning file naming the layer, a GPU runs the weight gradient through cuDNN (but for a 5 x 5
    stride-2 conv on maps under 28 px) and a 5 x 5 conv's forward and input gradient too (`default_cudnn`: run 8's
    sweep); the rest on the Triton kernels, all within 1e-5 of the composite. The interpreter keeps the Triton
    kernels."""
    tensors, options = _case(True, kernel_size, stride, False, shape)
    expected = outputs_and_gradients(bnd.bn_depthwise_reference, tensors, 44, **options)
    calls = _spy(monkeypatch)
    outputs_and_gradients(bnd.bn_depthwise, tensors, 44, **options)
    assert calls == []  # the interpreter
    monkeypatch.setattr(bnd, "_by_default", bnd.default_cudnn)  # a GPU's choices, run by the interpreter
    fused = outputs_and_gradients(bnd.bn_depthwise, tensors, 44, **options)
    assert calls == expected_calls
    for value, reference in zip(fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


def test_the_default_cudnn_rule():
    assert bnd.default_cudnn("bn_depthwise_weight_grad", 3, 2, 7)
    assert bnd.default_cudnn("bn_depthwise_weight_grad", 5, 2, 28) and not bnd.default_cudnn(
        "bn_depthwise_weight_grad", 5, 2, 24)
    assert not bnd.default_cudnn("bn_depthwise", 3, 1, 112)
    assert not bnd.default_cudnn("bn_depthwise_input_grad", 3, 1, 56)
    assert bnd.default_cudnn("bn_depthwise", 5, 2, 14) and bnd.default_cudnn("bn_depthwise_input_grad", 5, 1, 7)
    assert not bnd.default_cudnn("bn_depthwise_weight_grad", 7, 1, 56)  # kernels the sweep never timed


@needs_triton
def test_asymmetric_padding_keeps_the_triton_kernels(tmp_path, monkeypatch):
    """TF "same" padding of a 5 x 5, stride-2 conv on an 8 x 10 map pads one side more than cuDNN would: the
    tuning file's cuDNN entries are passed over and the gradients stay the composite's."""
    tensors, options = _case(True, 5, 2, True, shape=(2, 20, 8, 10))
    x = tensors[0]
    assert not bdc.takes(x, 5, 2, options["padding"], options["output_size"])
    _use_cudnn(tmp_path, PASSES["all"], x, 5, 2)
    calls = _spy(monkeypatch)
    fused = outputs_and_gradients(bnd.bn_depthwise, tensors, 44, **options)
    expected = outputs_and_gradients(bnd.bn_depthwise_reference, tensors, 44, **options)
    assert calls == []
    for value, reference in zip(fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


def test_takes_the_convs_cudnns_padding_gives():
    x = torch.empty(1, 8, 14, 15)
    for kernel_size, stride in ((3, 1), (5, 1), (3, 2), (5, 2)):  # symmetric padding k // 2: always
        output_size, padding = ops.conv_geometry(x, kernel_size, stride, False)
        assert bdc.takes(x, kernel_size, stride, padding, output_size)
    output_size, padding = ops.conv_geometry(torch.empty(1, 8, 14, 14), 3, 2, True)  # TF "same", even map
    assert padding == (0, 0) and not bdc.takes(torch.empty(1, 8, 14, 14), 3, 2, padding, output_size)


def test_a_cudnn_entry_takes_no_tiles(tmp_path):
    key = dict(kernel_size=3, stride=1, channels=8, height=8, width=8)
    path = tmp_path / "tuning.json"
    tuning.record(path, "bn_depthwise_input_grad", key, "cudnn", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    assert tuning.lookup("bn_depthwise_input_grad", **key)["kernel"] == "cudnn"
    bad = tmp_path / "bad.json"
    tuning.record(bad, "bn_depthwise_weight_grad", key, "cudnn", [4], device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match="bn_depthwise_weight_grad cudnn tiles must be 0 whole numbers"):
        tuning.use(bad)
