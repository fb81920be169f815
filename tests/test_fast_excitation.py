"""The squeeze-excitation gate's Triton forms compute the SE's function, and take the form the card's rules or
a tuning file name.

The one-launch kernel and the split form (two launches over chunks of channels) are held to the PyTorch gate
in float32 at relative error 1e-5, under Triton's interpreter where there is no GPU.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effnet.fast import ops, optimize_for_inference, tuning
from kernel_helpers import DEVICE, needs_triton, relative_error, spy_kwargs, tiny


@needs_triton
@pytest.mark.parametrize("batch, channels, reduced", [(4, 16, 4), (20, 100, 25), (1, 72, 18)])
def test_excitation_in_one_triton_launch_is_the_se_gate(batch, channels, reduced):
    """The Triton excitation (`effnet.fast.excitation`: both products and the SiLU in one launch, the hidden
    layer in registers) computes the same gate: images past a block of 16, channels past a block of 32, the
    hidden layer padded to 16 or 32 columns."""
    torch.manual_seed(4)
    reduce, expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)
    x = torch.randn(batch, channels, 6, 5, device=DEVICE)
    reduce, expand = reduce.to(DEVICE), expand.to(DEVICE)
    with torch.no_grad():
        expected = torch.sigmoid(expand(F.silu(reduce(x.mean((2, 3), keepdim=True))))).flatten(1)
        gate = ops.excitation(x.sum((2, 3)), 30, reduce, expand, use_triton=True)
    assert gate.dtype == torch.float32 and gate.shape == (batch, channels)
    assert relative_error(gate, expected) <= 1e-5


@needs_triton
@pytest.mark.parametrize("batch, channels, reduced, chunk", [(4, 16, 4, None), (20, 100, 25, 32), (1, 200, 50, 64)])
def test_excitation_split_over_chunks_of_channels_is_the_same_gate(tmp_path, monkeypatch, batch, channels, reduced,
                                                                   chunk):
    """The split form (`excitation_split`: the reduce product's partial hidden layers over chunks of channels, then
    the gate per chunk) computes the one-launch form's gate: images past a block of 16, a last chunk short, one
    chunk; a tuning file naming it for the SE's shape routes `ops.excitation` through it."""
    from effnet.fast import excitation as fused_excitation

    torch.manual_seed(5)
    reduce, expand = nn.Conv2d(channels, reduced, 1).to(DEVICE), nn.Conv2d(reduced, channels, 1).to(DEVICE)
    sums = torch.randn(batch, channels, device=DEVICE) * 30
    weights = (reduce.weight.detach().flatten(1).contiguous(), reduce.bias.detach(),
               expand.weight.detach().flatten(1).contiguous(), expand.bias.detach())
    expected = fused_excitation.excitation(sums, 30, *weights)
    assert relative_error(fused_excitation.excitation_split(sums, 30, *weights, chunk=chunk), expected) <= 1e-5
    path = tmp_path / "tuning.json"
    tuning.record(path, "excitation", dict(batch=batch, channels=channels, reduced=reduced), "split",
                  (chunk,) if chunk else (), device="test", seconds=1, default_seconds=2)
    calls = spy_kwargs(monkeypatch, fused_excitation, "excitation_split")
    tuning.use(path)
    try:
        with torch.no_grad():
            gate = ops.excitation(sums, 30, reduce, expand, use_triton=True)
    finally:
        tuning.use(None)
    assert len(calls) == 1 and calls[0]["chunk"] == chunk and relative_error(gate, expected) <= 1e-5
    with pytest.raises(ValueError, match="multiple of 32, got 48"):
        fused_excitation.excitation_split(sums, 30, *weights, chunk=48)


def test_a_gpus_wide_excitations_at_large_batches_take_the_split_form_by_default(monkeypatch):
    """Run 9 (an H200) timed the split form faster on every SE of 336 channels or more at batches of 128 and 256,
    in chunks of 128: on a GPU it is the default there. Narrower SEs, smaller batches (not timed) and the
    interpreter keep the one-launch kernel."""
    from effnet.fast import excitation as fused_excitation

    assert fused_excitation.default_kernel(256, 1152) == "single"  # the interpreter, as the tests run
    monkeypatch.setattr(fused_excitation, "INTERPRET", False)
    assert [fused_excitation.default_kernel(batch, channels) for batch, channels in
            ((256, 320), (128, 2688), (256, 240), (64, 1152), (1, 1152))] == ["split", "split", "single", "single",
                                                                           "single"]


@needs_triton
def test_an_excitation_takes_the_kernel_its_tuning_entry_names_over_the_default(tmp_path, monkeypatch):
    """Where the default is the split form in chunks of 128, an entry `single` runs the one-launch kernel; the
    gate is the same either way."""
    from effnet.fast import excitation as fused_excitation

    torch.manual_seed(6)
    reduce, expand = nn.Conv2d(160, 40, 1).to(DEVICE), nn.Conv2d(40, 160, 1).to(DEVICE)
    sums = torch.randn(3, 160, device=DEVICE) * 30
    weights = (reduce.weight.detach().flatten(1).contiguous(), reduce.bias.detach(),
               expand.weight.detach().flatten(1).contiguous(), expand.bias.detach())
    expected = fused_excitation.excitation_single(sums, 30, *weights)
    monkeypatch.setattr(fused_excitation, "default_kernel", lambda batch, channels: "split")
    split, single = (spy_kwargs(monkeypatch, fused_excitation, name)
                     for name in ("excitation_split", "excitation_single"))
    assert relative_error(fused_excitation.excitation(sums, 30, *weights), expected) <= 1e-5
    assert (len(split), len(single)) == (1, 0) and split[0]["chunk"] == fused_excitation.SPLIT_CHUNK
    path = tmp_path / "tuning.json"
    tuning.record(path, "excitation", dict(batch=3, channels=160, reduced=40), "single", (), device="test",
                  seconds=1, default_seconds=2)
    tuning.use(path)
    try:
        gate = fused_excitation.excitation(sums, 30, *weights)
    finally:
        tuning.use(None)
    assert (len(split), len(single)) == (1, 1) and relative_error(gate, expected) <= 1e-5


@needs_triton
def test_excitation_takes_tf32_for_16_bit_activations(monkeypatch):
    """On a GPU the excitation's products take TF32 for the SE of 16-bit activations (the fused bf16 inference
    block's and the fused training's under autocast), else only where PyTorch's float32 products would; IEEE
    float32 under the interpreter. IEEE on the multiprocessors' FMA units would cost B4 about 1 ms a forward."""
    from effnet.fast import excitation as fused_excitation
    from effnet.fast import se_projection

    monkeypatch.setattr(fused_excitation, "INTERPRET", False)
    saved = torch.backends.cuda.matmul.allow_tf32  # a property monkeypatch cannot restore
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert fused_excitation._precision(False) == "ieee" and fused_excitation._precision(True) == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert fused_excitation._precision(False) == "tf32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    monkeypatch.setattr(fused_excitation, "INTERPRET", True)
    assert fused_excitation._precision(True) == "ieee"
    half = torch.empty(1, dtype=torch.bfloat16), torch.empty(1, dtype=torch.float16), torch.empty(1)
    assert [se_projection._half(t) for t in half] == [True, True, False]
    # The fused inference blocks ask for it with their activations' dtype.
    calls = []
    real = ops.fused_excitation
    monkeypatch.setattr(ops, "fused_excitation", lambda *args, tf32: calls.append(tf32) or real(*args, tf32=tf32))
    model = tiny("efficientnet_b0")
    x = torch.randn(1, 3, 16, 16, device=DEVICE)
    with torch.inference_mode():
        for dtype in (torch.float16, torch.float32):
            optimize_for_inference(model, dtype=dtype, use_triton=True).to(DEVICE)(x)
    blocks = sum(getattr(m, "has_se", False) for m in model.modules())
    assert calls == [True] * blocks + [False] * blocks and blocks == 7
