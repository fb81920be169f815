"""MBConv training with every conv's batch norms fused into it (`effnet.fast.fused_training`) trains the
same model: output, every parameter's gradient and the running statistics after a training step.

Float32 under Triton's interpreter when there is no GPU, on a seven-block tiny B0. Its last blocks
see 2 x 2 and 1 x 1 maps of four images, where a batch norm over 16 or 4 values is badly conditioned
and PyTorch's own float32 gradients stray ~1e-4 from float64; so both float32 paths are held to a
float64 run of the plain model, the fused one to four times as far as PyTorch strays (or 1e-5). With two
images (batch norms over 8 or 2 values) every rounding is amplified: over five inputs the fused path's
worst error came out 0.2 to 7 times PyTorch's own, varying with the input more than with the path; with
four images, 0.3 to 0.7 over thirteen inputs (1.0 on a fourteenth).
"""
import copy

import pytest
import torch

from effnet.fast import bn_depthwise as bnd
from effnet.fast import bn_pointwise as bnp
from effnet.fast import bn_pointwise_blas as blas
from effnet.fast import kernels, projection_blas, tuning
from effnet.fast.fused_training import FusedTrainingMBConv, use_fused_training
from effnet.models.blocks import MBConv
from kernel_helpers import DEVICE, OpNames, graph_recorder, needs_triton, relative_error, tiny


def _step(model, x):
    """Output, each parameter's gradient and each buffer after one training forward + backward."""
    torch.manual_seed(31)  # the same drop-path draws in every model
    y = model(x)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(32), dtype=torch.float64).to(y)
    grads = torch.autograd.grad((y * upstream).sum(), list(model.parameters()))
    return [y, *grads, *[b.float() for b in model.buffers() if b.is_floating_point()]]


def _expansion_keys(model, x, projections: bool = False) -> list[dict]:
    """The tuning keys of the model's expansions (`bn_pointwise` layers taking their input as it is), or with
    `projections` its projections' (normalised: bn2, the SiLU and the SE gate before them)."""
    keys, hooks = [], []
    for block in model.modules():
        if isinstance(block, MBConv) and (block.expands or projections):
            conv = block.conv_pwl if projections else block.conv_pw
            hooks.append(conv.register_forward_pre_hook(lambda conv, inputs: keys.append(dict(
                in_channels=inputs[0].shape[1], out_channels=conv.out_channels, height=inputs[0].shape[2],
                width=inputs[0].shape[3], normalized=projections))))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return keys


@needs_triton
def test_fused_training_trains_as_the_plain_model(monkeypatch, tmp_path):
    """Every other expansion's and every other projection's three passes on the library's matrix products (a
    tuning file names them: `bn_pointwise_blas`, `projection_blas`), the rest of the convs on the Triton
    kernels."""
    plain = tiny().to(DEVICE).train()
    fused = use_fused_training(copy.deepcopy(plain))
    exact = copy.deepcopy(plain).double()
    blocks = sum(type(m) is MBConv for m in plain.modules())
    assert sum(isinstance(m, FusedTrainingMBConv) for m in fused.modules()) == blocks == 7
    assert list(fused.state_dict()) == list(plain.state_dict())
    launches = []  # which fused passes ran: the real ones, counted on the way through
    for module, name in ((bnp, "_forward"), (bnd, "_forward"), (blas, "forward"), (blas, "weight_grad"),
                         (projection_blas, "forward"), (projection_blas, "input_grad")):
        monkeypatch.setattr(module, name, lambda *args, real=getattr(module, name), name=f"{module.__name__}.{name}":
                            launches.append(name) or real(*args))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    x = x.contiguous(memory_format=torch.channels_last)
    path = tmp_path / "tuning.json"
    library = {tuple(key.values()): key for key in _expansion_keys(copy.deepcopy(plain), x)[::2]
               + _expansion_keys(copy.deepcopy(plain), x, projections=True)[1::2]}
    for key in library.values():
        for op in ("bn_pointwise", "bn_pointwise_input_grad", "bn_pointwise_weight_grad"):
            tuning.record(path, op, key, "blas", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    reference, plain_values = _step(exact, x.double()), _step(plain, x)
    try:
        fused_values = _step(fused, x)
    finally:
        tuning.use(None)
    # Every depthwise and 1x1 conv ran fused (the first block has no expansion), the expansions the tuning file
    # names (each shape's every layer) through the library.
    expansions = _expansion_keys(copy.deepcopy(plain), x)
    on_library = sum(tuple(key.values()) in library for key in expansions)
    assert 0 < on_library < len(expansions) == blocks - 1
    assert launches.count(f"{bnd.__name__}._forward") == blocks
    assert launches.count(f"{bnp.__name__}._forward") == 2 * blocks - 1
    assert launches.count(f"{blas.__name__}.forward") == launches.count(f"{blas.__name__}.weight_grad") == on_library
    projections = _expansion_keys(copy.deepcopy(plain), x, projections=True)
    projected = sum(tuple(key.values()) in library for key in projections)
    assert 0 < projected < len(projections) == blocks
    assert (launches.count(f"{projection_blas.__name__}.forward")
            == launches.count(f"{projection_blas.__name__}.input_grad") == projected)
    names = ["output"] + [n for n, _ in plain.named_parameters()] + [
        n for n, b in plain.named_buffers() if b.is_floating_point()]
    for name, value, torch_value, expected in zip(names, fused_values, plain_values, reference, strict=True):
        bound = max(4 * relative_error(torch_value.double(), expected), 1e-5)
        assert relative_error(value.double(), expected) <= bound, (name, relative_error(value.double(), expected))


@needs_triton
def test_backward_fills_no_zero_gradients_for_outputs_without_one():
    """The fused operators' outputs that no loss reaches (the depthwise pass's activation, kept for its weight
    gradient; the SE's pool and gate) stay without a gradient: autograd would otherwise fill a tensor of zeros
    for each, every step, the activation as large as the block's widest tensor."""
    model = use_fused_training(tiny().to(DEVICE).train())
    x = torch.randn(2, 3, 32, 32, device=DEVICE).contiguous(memory_format=torch.channels_last)
    loss = model(x).square().sum()
    with OpNames() as ops:
        loss.backward()
    assert "convolution_backward" in ops.names  # the stem's and head's plain layers: the mode saw the backward
    assert not {"zeros", "zeros_like", "zero_", "fill_", "new_zeros", "full", "full_like"} & set(ops.names)


@needs_triton
def test_fused_training_under_autocast_rounds_as_pytorchs_autocast_does():
    """Mixed precision (float16 autocast here: the interpreter's matrix products have no bfloat16): the
    half-precision output, on average over six inputs no further from the float32 model than PyTorch's own
    autocast model is.

    At 64 px, where the last batch norms see 2 x 2 maps of two images: at 32 px they normalise two
    values per channel, and any rounding can flip the output (both paths then stray 10-90% on some
    inputs); here both stray 3-12e-3 from input to input (the fused path's SE gate in float32, the plain
    block's in float16: on some inputs the fused output strays twice as far, on others half as far; over
    these six, 1.04 times as far in all)."""
    plain = tiny().to(DEVICE).train()
    fused = use_fused_training(copy.deepcopy(plain))
    errors = {"plain": 0.0, "fused": 0.0}
    for seed in (36, 37, 38, 39, 40, 41):
        x = torch.randn(2, 3, 64, 64, device=DEVICE, generator=torch.Generator(device=DEVICE).manual_seed(seed))
        x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(35)
        expected = copy.deepcopy(plain)(x)
        for name, model in (("plain", plain), ("fused", fused)):
            torch.manual_seed(35)
            with torch.autocast(torch.device(DEVICE).type, dtype=torch.float16):
                half = model(x)
            assert half.dtype == torch.float16
            errors[name] += relative_error(half.float(), expected)
    assert errors["fused"] <= 1.5 * errors["plain"], errors


@needs_triton
def test_fused_training_evaluates_and_falls_back_as_the_block_itself():
    """Eval mode, `no_grad` and channels-first input run MBConv's own forward: bit for bit the same."""
    plain = tiny().to(DEVICE)
    fused = use_fused_training(copy.deepcopy(plain))
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    assert torch.equal(fused.eval()(x), plain.eval()(x))
    plain.train(), fused.train()
    with torch.no_grad():
        torch.manual_seed(33)
        expected = plain(x)
        torch.manual_seed(33)
        assert torch.equal(fused(x), expected)
    # Channels-first memory: not what the kernels take (at 64 px no map shrinks to the 1 x 1 that is
    # both layouts at once).
    x = torch.randn(2, 3, 64, 64, device=DEVICE)
    torch.manual_seed(34)
    expected = plain(x)
    torch.manual_seed(34)
    assert torch.equal(fused(x), expected)


@needs_triton
def test_blocks_past_the_kernels_32_bit_offsets_run_their_own_forward(monkeypatch):
    """A block whose widest tensor (the expansion's output) has more elements than the kernels can address
    (2^31 on a GPU; 4,000 here) trains through MBConv's own forward, bit for bit; smaller blocks stay fused."""
    plain = tiny().to(DEVICE).train()
    fused = use_fused_training(copy.deepcopy(plain))
    x = torch.randn(2, 3, 32, 32, device=DEVICE).contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(kernels, "MAX_ELEMENTS", 4_000)
    widest = {}
    for name, block in fused.named_modules():
        if isinstance(block, FusedTrainingMBConv):
            block.register_forward_pre_hook(lambda module, inputs, name=name: widest.__setitem__(
                name, inputs[0].numel() // inputs[0].shape[1] * module.conv_dw.in_channels))
    calls = []
    real = bnd.bn_depthwise
    monkeypatch.setattr(bnd, "bn_depthwise", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    torch.manual_seed(35)
    expected = plain(x)
    torch.manual_seed(35)
    out = fused(x)
    assert relative_error(out, expected) <= 1e-5
    big = sum(elements > 4_000 for elements in widest.values())
    assert 0 < big < len(widest) and len(calls) == len(widest) - big


def test_bench_offers_the_fused_training_candidate_only_when_asked():
    from effnet.bench.candidates import build_candidates

    assert "effnet-ftrain" not in [c.name for c in build_candidates("efficientnet_b0", ("effnet",)).items]
    candidates = build_candidates("efficientnet_b0", ("effnet",), fused_training=True)
    (candidate,) = [c for c in candidates.items if c.name == "effnet-ftrain"]
    assert candidate.tasks == ("training",)
    model = candidate.build(torch.device("cpu"), torch.float32, torch.channels_last)
    assert sum(isinstance(m, FusedTrainingMBConv) for m in model.modules()) == 16  # every block of B0
    assert not any(isinstance(m, FusedTrainingMBConv) for m in candidates.reference.modules())


def test_effnet_bench_times_the_fused_training_row(capsys):
    """`effnet bench --fused-training` adds the row (on CPU with channels-first memory, the blocks run
    their own forward; at 64 px no map shrinks to the 1 x 1 that is both layouts at once. The kernels'
    check is the tests above, their timing a GPU's)."""
    import json

    from effnet.cli import main

    assert main(["bench", "--model", "efficientnet_b0", "--batch-size", "2", "--image-size", "64", "--warmup", "1",
                 "--repeats", "1", "--iterations", "1", "--task", "training", "--libraries", "effnet",
                 "--memory-saver", "none", "--fused-training", "--json"]) == 0
    rows = {row["candidate"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert set(rows) == {"effnet", "effnet-ftrain"} and rows["effnet-ftrain"]["images_per_second"] > 0


def test_use_fused_training_rejects_non_modules_and_models_without_mbconv_blocks():
    with pytest.raises(ValueError, match="needs an nn.Module"):
        use_fused_training("efficientnet_b0")
    with pytest.raises(ValueError, match="switches effnet's MBConv blocks; Linear has none"):
        use_fused_training(torch.nn.Linear(2, 2))
    model = use_fused_training(tiny())
    assert use_fused_training(model) is model  # switching twice is harmless


@needs_triton
def test_compiled_fused_block_is_one_graph_through_the_operators():
    """`torch.compile(fullgraph=True)` traces a fused training block (batch-norm bookkeeping, SE and
    all) through the forward and backward operators, with the eager block's gradients."""
    backend, graphs = graph_recorder()
    block = next(m for m in tiny().to(DEVICE).modules() if type(m) is MBConv and m.expands).train()
    use_fused_training(block)
    eager = copy.deepcopy(block)
    x = torch.randn(2, block.conv_pw.in_channels, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    # A loss weighing the output at random: the sum of its squares would be nearly constant through bn3 (the
    # batch norm's output has unit variance), so the gradients before it would be float32 noise.
    weights = torch.randn(2, block.conv_pwl.out_channels, 3, 3, device=DEVICE)
    grads = torch.autograd.grad((compiled(x) * weights).sum(), list(block.parameters()))
    expected = torch.autograd.grad((eager(x) * weights).sum(), list(eager.parameters()))
    for name in ("bn_pointwise", "bn_depthwise", "se_projection"):  # the expansion, depthwise, SE + projection
        assert graphs["forward"].count(f"effnet.{name}.default") == 1, name
        assert graphs["backward"].count(f"effnet.{name}_backward.default") == 1, name
    for grad, reference in zip(grads, expected, strict=True):
        assert relative_error(grad, reference) <= 1e-5
    for buffer, reference in zip(block.buffers(), eager.buffers(), strict=True):  # updated once each, as eager did
        assert torch.allclose(buffer.float(), reference.float(), rtol=1e-5, atol=1e-6)
