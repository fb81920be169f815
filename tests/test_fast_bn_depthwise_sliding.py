"""The training depthwise conv's forward and input gradient on the sliding window (`effnet.fast.bn_depthwise_sliding`),
where a tuning file names them for a layer shape (the input gradient at stride 1): the same output, statistics and
gradients as the PyTorch composite, either pass alone or both, the Triton kernels doing the rest; TF "same" padding
too. Float32 under Triton's interpreter when there is no GPU."""
import pytest
import torch

from effnet.fast import bn_depthwise as bnd
from effnet.fast import bn_depthwise_sliding as bds
from effnet.fast import tuning
from kernel_helpers import DEPTHWISE_FORM_FUNCTIONS as FUNCTIONS
from kernel_helpers import depthwise_training_case, needs_triton, outputs_and_gradients, relative_error
from kernel_helpers import small_depthwise_tiles  # noqa: F401 - the fixture every test here uses
from kernel_helpers import spy_calls

pytestmark = pytest.mark.usefixtures("small_depthwise_tiles")

PASSES = {"forward": ("bn_depthwise",), "input": ("bn_depthwise_input_grad",),
          "both": ("bn_depthwise", "bn_depthwise_input_grad")}


@needs_triton
@pytest.mark.parametrize("passes, affine, kernel_size, stride, same", [
    ("forward", True, 3, 1, False), ("forward", False, 5, 1, False),  # without an affine map: a is x
    ("forward", True, 5, 2, True),  # strided: the forward only (the input gradient is a stride-1 conv's)
    ("input", True, 5, 1, True), ("input", False, 3, 1, False), ("both", True, 3, 1, False),
])
def test_sliding_passes_equal_the_composite(tmp_path, monkeypatch, passes, affine, kernel_size, stride, same):
    """Each pass on the sliding window where the tuning file says so (the input gradient on the g the Triton weight
    gradient wrote): output, statistics and every gradient within 1e-5 of the composite."""
    tensors, options = depthwise_training_case(affine, kernel_size, stride, same, 48, (2, 20, 7, 9))
    expected = outputs_and_gradients(bnd.bn_depthwise_reference, tensors, 49, **options)
    x = tensors[0]
    key = dict(kernel_size=kernel_size, stride=stride, channels=x.shape[1], height=x.shape[2], width=x.shape[3])
    path = tmp_path / "tuning.json"
    for op in PASSES[passes]:
        tuning.record(path, op, key, "sliding", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    calls = spy_calls(monkeypatch, bds, ("forward", "input_grad"))
    fused = outputs_and_gradients(bnd.bn_depthwise, tensors, 49, **options)
    assert calls == [FUNCTIONS[op] for op in PASSES[passes]]
    names = ["y", "mean", "var", "dx", "dweight"] + ["dscale", "dshift"] * affine
    for name, value, reference in zip(names, fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op, key, message", [
    ("bn_depthwise_input_grad", dict(kernel_size=3, stride=2, channels=96, height=112, width=112),
     "the sliding depthwise kernel is for stride 1 and kernels up to 5x5 \\(as wide as the stride\\), got "
     "stride 2"),
    ("bn_depthwise_input_grad", dict(kernel_size=7, stride=1, channels=96, height=14, width=14),
     "got stride 1 and a 7x7 kernel"),
    ("bn_depthwise_weight_grad", dict(kernel_size=3, stride=1, channels=96, height=14, width=14),
     "a bn_depthwise_weight_grad entry needs 'kernel' in"),
])
def test_a_sliding_training_entry_the_kernel_cannot_run_is_refused(tmp_path, op, key, message):
    path = tmp_path / "tuning.json"
    tuning.record(path, op, key, "sliding", [], device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match=message):
        tuning.load(path)


@needs_triton
@pytest.mark.parametrize("channels, tiles", [
    (24, []),  # the last channel block masked; the defaults (here 16 columns x 16 channels, bands of 8 rows)
    (32, [16, 16, 8, 1, 1]),  # every block whole; each row loaded a step ahead, from the file's tiles
])
def test_sliding_passes_over_bands_and_inside_columns_equal_the_composite(tmp_path, monkeypatch, channels, tiles):
    """A map taller than a band and wide enough for a column block whose taps all read inside (its loads and
    stores unmasked) between two edge blocks: the same output, statistics and gradients."""
    monkeypatch.setattr(bds, "default_tiles", lambda channels, height, width: (16, 16, 8, 1))
    tensors, options = depthwise_training_case(True, 3, 1, False, 50, (1, channels, 19, 40))
    expected = outputs_and_gradients(bnd.bn_depthwise_reference, tensors, 51, **options)
    key = dict(kernel_size=3, stride=1, channels=channels, height=19, width=40)
    path = tmp_path / "tuning.json"
    for op in PASSES["both"]:
        tuning.record(path, op, key, "sliding", tiles, device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    fused = outputs_and_gradients(bnd.bn_depthwise, tensors, 51, **options)
    for name, value, reference in zip(["y", "mean", "var", "dx", "dweight", "dscale", "dshift"], fused, expected,
                                      strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
