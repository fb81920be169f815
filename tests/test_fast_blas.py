"""The 1x1 conv as one library matrix product (`effnet.fast.blas`) computes what `ops.pointwise` computes in
PyTorch, and a tuning file that names it for a layer routes that layer through it, the fused model unchanged.

float32 at relative error 1e-5 (bf16 within 1e-2, where both sides round once per step).
"""
import pytest
import torch

from effnet.fast import blas, ops, optimize_for_inference, tuning
from kernel_helpers import DEVICE, layer_keys, needs_triton, relative_error, spy_kwargs, tiny, tuned_and_plain


def channels_last(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, device=DEVICE, dtype=dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("act, gated, residual", [(True, False, False), (False, True, False), (False, True, True),
                                                  (True, True, True)])
def test_blas_pointwise_equals_pytorch(act, gated, residual, dtype, bound):
    torch.manual_seed(7)
    batch, in_channels, out_channels, height, width = 3, 24, 40, 5, 7
    x = channels_last(batch, in_channels, height, width, dtype=dtype)
    weight = torch.randn(out_channels, in_channels, 1, 1, device=DEVICE, dtype=dtype) / in_channels ** 0.5
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(out_channels, device=DEVICE, dtype=dtype)
    gate = torch.rand(batch, in_channels, device=DEVICE) if gated else None
    shortcut = channels_last(batch, out_channels, height, width, dtype=dtype) if residual else None
    expected = ops.pointwise(x, weight, weight_t, bias, act=act, gate=gate, residual=shortcut, use_triton=False)
    output = blas.pointwise_blas(x, weight_t, bias, act=act, gate=gate, residual=shortcut)
    assert output.is_contiguous(memory_format=torch.channels_last) and output.dtype == dtype
    assert relative_error(output, expected) <= bound
    if gated:  # the gate is per image: another image's gate changes that image's pixels only
        other = gate.clone()
        other[1] = torch.rand(in_channels, device=DEVICE)
        changed = blas.pointwise_blas(x, weight_t, bias, act=act, gate=other, residual=shortcut)
        assert torch.equal(changed[[0, 2]], output[[0, 2]]) and not torch.equal(changed[1], output[1])


def test_blas_pointwise_takes_an_input_in_any_layout():
    x = torch.randn(2, 8, 3, 3, device=DEVICE)  # contiguous, not channels-last: the matrix view is a copy
    weight = torch.randn(16, 8, 1, 1, device=DEVICE)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(16, device=DEVICE)
    gate = torch.rand(2, 8, device=DEVICE)
    expected = ops.pointwise(x, weight, weight_t, bias, act=True, gate=gate, use_triton=False)
    assert relative_error(blas.pointwise_blas(x, weight_t, bias, act=True, gate=gate), expected) <= 1e-5


@needs_triton
def test_a_tuning_file_naming_cublas_routes_those_layers_through_it(tmp_path, monkeypatch):
    model = tiny("efficientnet_b0", width=0.1).to(DEVICE)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    _, pointwise = layer_keys(model, x)
    path = tmp_path / "tuning.json"
    chosen = [key for key in pointwise if key["gated"]]  # the projections: gate, and residual where there is one
    for key in chosen:
        tuning.record(path, "pointwise", key, "cublas", (), device="test", seconds=1, default_seconds=2)
    calls = spy_kwargs(monkeypatch, blas, "pointwise_blas")
    fast = optimize_for_inference(model, use_triton=True)
    out, expected = tuned_and_plain(fast, model, x, path)
    assert relative_error(out, expected) <= 1e-5
    assert len(calls) == len(chosen) > 0 and all(call["gate"] is not None for call in calls)
    assert any(call["residual"] is not None for call in calls)


def test_a_cublas_entry_takes_no_tiles(tmp_path):
    path = tmp_path / "tuning.json"
    key = dict(in_channels=16, out_channels=96, height=7, width=7, gated=True, residual=False)
    tuning.record(path, "pointwise", key, "cublas", (1, 2), device="test", seconds=1, default_seconds=2)
    with pytest.raises(tuning.TuningError, match="cublas tiles must be 0 whole numbers"):
        tuning.load(path)
