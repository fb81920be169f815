"""The fused stem (input cast + k x k conv + bias + SiLU in one pass) computes the unfused stem.

The kernel is held to its PyTorch reference, and the fused-stem model to the plain model, in
float32 at relative error 1e-5. Without a GPU the kernel runs in Triton's interpreter (conftest
sets TRITON_INTERPRET=1), on deliberately tiny shapes.
"""
import re

import pytest
import torch

from effnet.fast import optimize_for_inference, stem as stem_module, tuning
from effnet.fast.fused import FusedStem
from effnet.fast.stem import stem
from kernel_helpers import DEVICE, needs_triton, relative_error, spy_kwargs, tiny, tuned_and_plain


@needs_triton
@pytest.mark.parametrize("same, out_channels, channels_last", [
    (False, 24, False),  # symmetric padding; channels not a multiple of the block: the tail is masked
    (True, 72, False),  # TF "same" padding; two channel blocks
    (False, 8, True),  # an input in another layout: the kernel reads it through its strides
])
def test_stem_kernel_equals_pytorch(same, out_channels, channels_last):
    torch.manual_seed(1)
    # Odd height, even width: at stride 2, TF "same" pads the width 0 left and 1 right (symmetric:
    # 1 and 1), the height 1 and 1 as symmetric does. 2 x 7 x 5 output pixels: the interpreter's
    # 32-pixel tiles span rows and both images, the last one masked.
    x = torch.randn(2, 3, 13, 10, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, 3, 3, 3, device=DEVICE)
    weight_cols = weight.flatten(1).t().contiguous()
    bias = torch.randn(out_channels, device=DEVICE)
    expected = stem(x, weight, weight_cols, bias, stride=2, same=same, use_triton=False)
    output = stem(x, weight, weight_cols, bias, stride=2, same=same, use_triton=True)
    assert output.shape == expected.shape == (2, out_channels, 7, 5)
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(output, expected) <= 1e-5


def _stem_tuning(path, x, out_channels, tiles=()):
    """Write a tuning file naming the tensor-core form for the stem of input `x` (3 x 3, stride 2)."""
    key = dict(in_channels=x.shape[1], out_channels=out_channels, kernel_size=3, stride=2, height=x.shape[2],
               width=x.shape[3])
    tuning.record(path, "stem", key, "dot", tiles, device="test", seconds=1, default_seconds=2)


@needs_triton
@pytest.mark.parametrize("dtype, bound", [
    (torch.float32, 1e-5),
    # Triton 3.8's interpreter multiplies bf16 operands of tl.dot wrongly (a 16 x 32 by 32 x 16 product of
    # random values comes out near 1e10), so bf16 runs on a GPU only (gpu_check covers it there).
    pytest.param(torch.bfloat16, 1e-2, marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="the interpreter's bf16 tl.dot is wrong"))])
@pytest.mark.parametrize("same, out_channels, channels_last", [(False, 24, False), (True, 72, False),
                                                               (False, 8, True)])
def test_the_tensor_core_stem_equals_pytorch(tmp_path, monkeypatch, same, out_channels, channels_last, dtype,
                                             bound):
    """The stem as one product of gathered taps (`_stem_dot_kernel`, a tuning file's choice): the same function,
    the input rounded to the model's dtype as it is gathered."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 13, 10, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, 3, 3, 3, device=DEVICE, dtype=dtype)
    weight_cols, bias = weight.flatten(1).t().contiguous(), torch.randn(out_channels, device=DEVICE, dtype=dtype)
    expected = stem(x, weight, weight_cols, bias, stride=2, same=same, use_triton=False)
    calls = spy_kwargs(monkeypatch, stem_module, "_launch_dot")
    _stem_tuning(tmp_path / "tuning.json", x, out_channels)
    tuning.use(tmp_path / "tuning.json")
    try:
        output = stem(x, weight, weight_cols, bias, stride=2, same=same, use_triton=True)
    finally:
        tuning.use(None)
    assert len(calls) == 1
    assert output.shape == expected.shape == (2, out_channels, 7, 5) and output.dtype == dtype
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(output, expected) <= bound


@needs_triton
def test_a_tuning_file_naming_the_tensor_core_stem_keeps_the_fused_model_equal(tmp_path):
    model = tiny("efficientnet_b0", width=0.1).to(DEVICE)
    fast = optimize_for_inference(model, use_triton=True, fuse_stem=True)
    x = torch.randn(2, 3, 16, 14, device=DEVICE)
    _stem_tuning(tmp_path / "tuning.json", x, model.conv_stem.out_channels, tiles=(64, 4))
    assert relative_error(*tuned_and_plain(fast, model, x, tmp_path / "tuning.json")) <= 1e-5


def test_a_stem_entry_names_a_known_kernel(tmp_path):
    path = tmp_path / "tuning.json"
    key = dict(in_channels=3, out_channels=32, kernel_size=3, stride=2, height=224, width=224)
    tuning.record(path, "stem", key, "dot", (64,), device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match="stem dot tiles must be 0 or 2 whole numbers"):
        tuning.load(path)


@needs_triton
def test_triton_fused_stem_model_equals_reference():
    model = tiny("tf_efficientnet_b0", width=0.1).to(DEVICE)  # the stem conv is a SameConv2d
    fast = optimize_for_inference(model, use_triton=True, fuse_stem=True)
    assert isinstance(fast.model.conv_stem, FusedStem) and not fast.cast
    x = torch.randn(1, 3, 9, 8, device=DEVICE)  # an even width: "same" padding differs from symmetric
    with torch.inference_mode():
        assert relative_error(model(torch.randn_like(x)), model(x)) > 0.1  # the logits depend on the input
        assert relative_error(fast(x), model(x)) <= 1e-5


def test_fused_stem_keeps_the_function_and_only_replaces_silu_stems():
    x = torch.randn(1, 3, 17, 14)
    for name, fused in (("efficientnet_b0", True), ("efficientnet_lite0", False)):
        model = tiny(name, width=0.1)
        fast = optimize_for_inference(model, use_triton=False, fuse_stem=True)
        plain = optimize_for_inference(model, use_triton=False)
        assert isinstance(fast.model.conv_stem, FusedStem) is fused and fast.cast is not fused
        assert fast.state_dict().keys() == plain.state_dict().keys()
        # In bf16 the stem op casts the float32 input where ChannelsLastInput did; the same ops follow.
        fast_bf16 = optimize_for_inference(model, dtype=torch.bfloat16, use_triton=False, fuse_stem=True)
        plain_bf16 = optimize_for_inference(model, dtype=torch.bfloat16, use_triton=False)
        with torch.inference_mode():
            assert relative_error(fast(x), model(x)) <= 1e-5
            assert relative_error(fast_bf16(x), plain_bf16(x)) <= 1e-3


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (3, 8, 8)])
def test_stem_rejects_an_input_with_other_channels_or_no_batch(shape):
    weight = torch.randn(8, 3, 3, 3)
    with pytest.raises(ValueError, match=rf"shaped \(N, 3, H, W\), got {re.escape(str(shape))}"):
        stem(torch.randn(*shape), weight, weight.flatten(1).t().contiguous(), torch.zeros(8), stride=2,
             same=False, use_triton=False)


def test_a_gpus_16_bit_stem_takes_the_tensor_core_form_by_default(monkeypatch):
    """Run 9 (an H200) timed the product form at 2.3-4.8x the direct kernel on B0's and B4's bf16 stems: on a GPU
    it is the default for 16-bit weights. Float32 (its product in IEEE float32, never timed) and the interpreter
    keep the direct kernel."""
    assert stem_module.default_kernel(torch.bfloat16) == "direct"  # the interpreter, as the tests run
    monkeypatch.setattr(stem_module, "INTERPRET", False)
    assert [stem_module.default_kernel(dtype) for dtype in (torch.bfloat16, torch.float16, torch.float32)] == [
        "dot", "dot", "direct"]


@needs_triton
def test_a_tuning_file_naming_the_direct_kernel_overrides_the_default(tmp_path, monkeypatch):
    """A stem entry `direct` runs the direct kernel where the default would be the product form, and the same
    function comes out."""
    x = torch.randn(2, 3, 13, 10, device=DEVICE)
    weight = torch.randn(24, 3, 3, 3, device=DEVICE)
    weight_cols, bias = weight.flatten(1).t().contiguous(), torch.randn(24, device=DEVICE)
    expected = stem(x, weight, weight_cols, bias, stride=2, same=False, use_triton=False)
    monkeypatch.setattr(stem_module, "default_kernel", lambda dtype: "dot")
    direct, dot = (spy_kwargs(monkeypatch, stem_module, name) for name in ("_launch_direct", "_launch_dot"))
    assert relative_error(stem(x, weight, weight_cols, bias, stride=2, same=False, use_triton=True), expected) <= 1e-5
    assert (len(direct), len(dot)) == (0, 1)  # the default, as monkeypatched
    path = tmp_path / "tuning.json"
    tuning.record(path, "stem", dict(in_channels=3, out_channels=24, kernel_size=3, stride=2, height=13, width=10),
                  "direct", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    try:
        output = stem(x, weight, weight_cols, bias, stride=2, same=False, use_triton=True)
    finally:
        tuning.use(None)
    assert (len(direct), len(dot)) == (1, 1) and relative_error(output, expected) <= 1e-5
