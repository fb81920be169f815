"""The training 1x1 conv with the batch norms fused at both ends (`effnet.fast.bn_pointwise`) computes
its PyTorch composite's function and gradients (the output, its batch mean and variance), and
chained through `bn_stats.batch_norm_affine` it trains as conv -> BatchNorm2d -> SiLU -> conv -> BatchNorm2d.

Float32 under Triton's interpreter when there is no GPU (its matrix products have no bfloat16; the
GPU check covers bf16), on tiny shapes: channels off the tiles (masked tails), several K steps,
maps whose pixel count is ragged against the row tiles, and the weight gradient split over rows.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effnet.fast import bn_pointwise as bnp
from effnet.fast import bn_stats
from kernel_helpers import DEVICE, graph_recorder, needs_triton, outputs_and_gradients, relative_error


@pytest.fixture(autouse=True)
def _small_tiles(monkeypatch):
    """Tiles smaller than the tests' shapes (the interpreter's defaults are large, for whole models)."""
    monkeypatch.setattr(bnp, "_INTERPRET_TILES", (16, 16, 16, 4, 1))


def _inputs(dtype: torch.dtype, affine: bool, gate: bool, shape=(2, 20, 5, 6), out_channels: int = 24):
    torch.manual_seed(21)
    batch, channels = shape[:2]
    x = torch.randn(shape, device=DEVICE).to(dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, channels, device=DEVICE) / channels ** 0.5
    scale = torch.rand(channels, device=DEVICE) + 0.5 if affine else None
    shift = torch.randn(channels, device=DEVICE) * 0.3 if affine else None
    gates = torch.rand(batch, channels, device=DEVICE) if gate else None
    return x, weight, scale, shift, gates


def _run(function, inputs, act: bool):
    return outputs_and_gradients(function, inputs, 22, act=act)


@needs_triton
@pytest.mark.parametrize("affine, act, gate", [(True, True, True), (False, False, False), (True, False, False),
                                               (False, True, True), (False, False, True)])
def test_bn_pointwise_equals_its_pytorch_composite(affine, act, gate):
    inputs = _inputs(torch.float32, affine, gate)
    assert bnp.usable(inputs[0])
    fused, reference = _run(bnp.bn_pointwise, inputs, act), _run(bnp.bn_pointwise_reference, inputs, act)
    names = ["y", "mean", "var", "dx", "dweight"] + ["dscale", "dshift"] * affine + ["dgate"] * gate
    for name, value, expected in zip(names, fused, reference, strict=True):
        assert value.shape == expected.shape, name
        assert relative_error(value, expected) <= 1e-5, (name, relative_error(value, expected))
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


@needs_triton
def test_bn_pointwise_half_precision_and_larger_maps():
    """float16 (the interpreter's half type) within rounding of the composite, on a map of 81 pixels
    per image: several row tiles per image, the last one ragged, and the weight gradient's row split."""
    inputs = _inputs(torch.float16, affine=True, gate=True, shape=(3, 36, 9, 9), out_channels=40)
    fused, reference = _run(bnp.bn_pointwise, inputs, True), _run(bnp.bn_pointwise_reference, inputs, True)
    for index, (value, expected) in enumerate(zip(fused, reference, strict=True)):
        assert value.dtype == expected.dtype and relative_error(value.float(), expected.float()) <= 2e-3, index


@needs_triton
@pytest.mark.parametrize("channels, out_channels", [(20, 136), (136, 20), (200, 136), (40, 20)])
@pytest.mark.parametrize("pixels", [30, 56 * 56])
def test_bn_pointwise_with_the_gpu_default_tiles(monkeypatch, channels, out_channels, pixels):
    """The tiles a GPU takes by default span the narrow side where it is read many times (an expansion's 20
    inputs in one K tile of 32 in both gradients; a projection's 20 outputs in one N tile of 32 in the forward
    and the weight gradient, its 136 in one of 256 with 32 rows in the forward) and the wide side of the input
    gradient's output (a projection's 40 inputs in one K tile of 64), except where run 9 timed a four-warp
    tile faster on every layer of its kind: a projection's input gradient with 64 inputs or more, the weight
    gradient on maps of 28 x 28 or less (`default_tiles`). Each is the same function as the composite with
    every channel tail masked (136 outputs in two weight-gradient tiles of 128, or three of 64)."""
    expansion = out_channels > channels
    tiles = {op: bnp.default_tiles(op, channels, out_channels, pixels) for op in bnp.OPS}
    if expansion:
        assert tiles["bn_pointwise_input_grad"][2] >= channels
    else:
        assert tiles["bn_pointwise"][1] >= out_channels
        assert tiles["bn_pointwise_input_grad"] == ((64, 64, 64, 4, 3) if channels >= 64 else (64, 32, 64, 8, 3))
    if pixels <= 28 * 28:
        assert tiles["bn_pointwise_weight_grad"] == (32, 64, 64, 4, 3)
    elif expansion:
        assert tiles["bn_pointwise_weight_grad"][2] >= channels
    else:
        assert tiles["bn_pointwise_weight_grad"][1] >= min(out_channels, 128)
    monkeypatch.setattr(bnp, "_tiles", lambda op, x, n, *layer:
                        bnp.default_tiles(op, x.shape[1], n, pixels)[:3] + (4, 1))
    inputs = _inputs(torch.float32, affine=True, gate=True, shape=(2, channels, 5, 6), out_channels=out_channels)
    fused, reference = _run(bnp.bn_pointwise, inputs, True), _run(bnp.bn_pointwise_reference, inputs, True)
    for index, (value, expected) in enumerate(zip(fused, reference, strict=True)):
        assert relative_error(value, expected) <= 1e-5, index


@needs_triton
@pytest.mark.parametrize("block_k, out_channels", [(32, 24), (16, 24), (32, 12)])
@pytest.mark.parametrize("affine, act, gate", [(False, False, False), (True, True, True), (False, True, False)])
def test_expansion_gradients_recompute_y(monkeypatch, block_k, out_channels, affine, act, gate):
    """An expansion (20 -> 24) with all its 20 input channels in one K block of 32: both gradients take y's tiles
    as the forward's product again (a @ weight.T on the tiles they hold) and never load y. With K blocks of 16,
    or for a projection (20 -> 12, y the narrow side), they load it. Either way the composite's output and
    gradients, whatever the input's mode (raw; normalised, activated and gated; activated)."""
    monkeypatch.setattr(bnp, "_INTERPRET_TILES", (16, 16, block_k, 4, 1))
    launched = []
    for name in ("_pw_input_grad_kernel", "_pw_weight_grad_kernel"):
        monkeypatch.setattr(bnp, name, _Recording(getattr(bnp, name), launched))
    inputs = _inputs(torch.float32, affine, gate, shape=(2, 20, 5, 6), out_channels=out_channels)
    fused, reference = _run(bnp.bn_pointwise, inputs, act), _run(bnp.bn_pointwise_reference, inputs, act)
    for index, (value, expected) in enumerate(zip(fused, reference, strict=True)):
        assert relative_error(value, expected) <= 1e-5, index
    assert launched == [block_k >= 20 and out_channels > 20] * 2


class _Recording:
    """A Triton kernel whose launches note their RECOMPUTE flag."""

    def __init__(self, kernel, launched: list) -> None:
        self.kernel, self.launched = kernel, launched

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launched.append(kwargs["RECOMPUTE"])
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_expansions_on_large_maps_default_to_the_library_form(monkeypatch, tmp_path):
    """On a GPU, with no tuning file naming the layer, an expansion's forward and input gradient on maps of 56 x 56
    or more take the library's products (run 9: 1.65-2.4x the default tiles there); its weight gradient, smaller
    maps, projections and a layer a tuning file names keep what they had. The interpreter keeps its own tiles."""
    from effnet.fast import tuning

    def choices(x, out_channels, scale=None, act=False):
        return {op: bnp._tiles(op, x, out_channels, scale, None, act) for op in bnp.OPS}

    wide, small = (torch.empty(2, channels, size, size, device="meta") for channels, size in ((24, 56), (40, 28)))
    assert set(choices(wide, 144).values()) == {bnp._INTERPRET_TILES}  # the interpreter's tiles, as before
    monkeypatch.setattr(bnp, "INTERPRET", False)
    tuning.use(None)
    try:
        assert choices(wide, 144) == {"bn_pointwise": bnp.BLAS, "bn_pointwise_input_grad": bnp.BLAS,
                                      "bn_pointwise_weight_grad": bnp.default_tiles("bn_pointwise_weight_grad", 24,
                                                                                    144, 56 * 56)}
        assert choices(small, 240) == {op: bnp.default_tiles(op, 40, 240, 28 * 28) for op in bnp.OPS}
        scale = torch.empty(24, device="meta")
        assert choices(wide, 16, scale, act=True) == {op: bnp.default_tiles(op, 24, 16, 56 * 56) for op in bnp.OPS}
        path = tmp_path / "tuning.json"
        key = dict(in_channels=24, out_channels=144, height=56, width=56, normalized=False)
        tuning.record(path, "bn_pointwise", key, "tiled", [64, 128, 32, 4, 3], device="test", seconds=1,
                      default_seconds=2)
        tuning.use(path)
        assert choices(wide, 144)["bn_pointwise"] == (64, 128, 32, 4, 3)
        assert choices(wide, 144)["bn_pointwise_input_grad"] == bnp.BLAS
    finally:
        tuning.use(None)
    assert not bnp.default_library("bn_pointwise_weight_grad", 112 * 112)
    assert bnp.default_library("bn_pointwise", 56 * 56) and not bnp.default_library("bn_pointwise", 55 * 56)


def test_default_tiles_name_their_pass():
    with pytest.raises(ValueError, match="unknown bn_pointwise pass 'bn_pointwise_backward'"):
        bnp.default_tiles("bn_pointwise_backward", 16, 96, 30)


@pytest.mark.parametrize("batch, pixels, chunks, gated, expected", [
    (4, 30, 1, False, (1, 120, 128, 1, 1)),  # the batch as one image, in one chunk
    (4, 30, 3, False, (1, 120, 48, 1, 3)),  # ... cut anywhere on a row tile: 48 + 48 + 24 rows
    (5, 30, 2, True, (5, 30, 30, 3, 2)),  # whole images: 3, then the last 2
    (2, 30, 4, True, (2, 30, 16, 1, 4)),  # each image cut in two pieces of whole tiles: 16 + 14 rows
    (2, 30, 64, True, (2, 30, 16, 1, 4)),  # never a piece of less than a tile
])
def test_weight_grad_split(batch, pixels, chunks, gated, expected):
    """(images, pixels, rows per program, images per program, chunks) with 16-row tiles."""
    if bnp.triton is None:
        pytest.skip("needs Triton")
    assert bnp.weight_grad_split(batch, pixels, 16, chunks, gated) == expected


@needs_triton
@pytest.mark.parametrize("chunks", [1, 2, 5])
@pytest.mark.parametrize("gate", [True, False])
def test_weight_gradient_is_the_same_however_the_rows_are_split(monkeypatch, chunks, gate):
    """Whole images per program (two, then a ragged last one), pieces of images, or the batch as one
    image: the weight gradient (and the gate's) equal the composite's."""
    monkeypatch.setattr(bnp, "_chunks_wanted", lambda x, tiles, rows, waves: chunks)
    inputs = _inputs(torch.float32, affine=True, gate=gate, shape=(3, 20, 5, 7), out_channels=24)
    fused, reference = _run(bnp.bn_pointwise, inputs, True), _run(bnp.bn_pointwise_reference, inputs, True)
    for index, (value, expected) in enumerate(zip(fused, reference, strict=True)):
        assert relative_error(value, expected) <= 1e-5, index


@needs_triton
def test_a_weight_gradient_tile_set_may_name_the_programs_its_row_split_aims_for(monkeypatch):
    """A sixth value of the weight gradient's tiles (a tuning file's or the sweep's) sets the programs per
    multiprocessor `_chunks_wanted` aims for; the gradients stay the composite's."""
    waves, wanted = [], bnp._chunks_wanted
    monkeypatch.setattr(bnp, "_chunks_wanted", lambda x, tiles, rows, count: waves.append(count) or wanted(
        x, tiles, rows, count))
    inputs = _inputs(torch.float32, affine=True, gate=False, shape=(3, 20, 5, 7), out_channels=24)
    x, weight, scale, shift = inputs[:4]
    y, mean, _ = bnp.bn_pointwise_reference(x, weight, scale, shift, act=True)
    stats = bn_stats.gradient_stats(mean, mean, mean, y)
    dy = torch.randn_like(y)
    default, _ = bnp._weight_grad(dy, stats, x, y, weight, scale, shift, None, True, (16, 16, 16, 4, 1))
    split, _ = bnp._weight_grad(dy, stats, x, y, weight, scale, shift, None, True, (16, 16, 16, 4, 1, 1))
    assert waves == [bnp._WAVES, 1] and relative_error(split, default) <= 1e-6


class _Composite(nn.Module):
    """conv1x1 -> BN -> SiLU -> conv1x1 -> BN, as the training MBConv chains its 1x1 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(12, 20, 1, bias=False), nn.BatchNorm2d(20)
        self.conv2, self.bn2 = nn.Conv2d(20, 16, 1, bias=False), nn.BatchNorm2d(16)
        for bn in (self.bn1, self.bn2):
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.3, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.silu(self.bn1(self.conv1(x)))))

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        y1, mean1, var1 = bnp.bn_pointwise(x, self.conv1.weight)
        scale1, shift1 = bn_stats.batch_norm_affine(mean1, var1, self.bn1.weight, self.bn1.bias, self.bn1.eps)
        y2, mean2, var2 = bnp.bn_pointwise(y1, self.conv2.weight, scale1, shift1, act=True)
        scale2, shift2 = bn_stats.batch_norm_affine(mean2, var2, self.bn2.weight, self.bn2.bias, self.bn2.eps)
        return y2 * scale2[None, :, None, None] + shift2[None, :, None, None]


@needs_triton
def test_chained_through_batch_norm_affine_it_trains_as_batchnorm2d():
    """The statistics' gradients carry the batch norms' backward: output and every gradient match the
    nn.BatchNorm2d model in training mode."""
    torch.manual_seed(23)
    model = _Composite().to(DEVICE).train()
    x = torch.randn(2, 12, 5, 7, device=DEVICE).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 16, 5, 7, device=DEVICE)
    y_ref = model(x.clone().requires_grad_())
    grads_ref = torch.autograd.grad((y_ref * upstream).sum(), list(model.parameters()))
    x_fused = x.clone().requires_grad_()
    y = model.fused(x_fused)
    grads = torch.autograd.grad((y * upstream).sum(), [x_fused, *model.parameters()])
    assert relative_error(y, y_ref) <= 1e-5
    names = [name for name, _ in model.named_parameters()]
    for name, grad, expected in zip(names, grads[1:], grads_ref, strict=True):
        assert relative_error(grad, expected) <= 1e-4, (name, relative_error(grad, expected))
    # And the input's gradient, against the reference's.
    x_ref = x.clone().requires_grad_()
    (dx_ref,) = torch.autograd.grad((model(x_ref) * upstream).sum(), [x_ref])
    assert relative_error(grads[0], dx_ref) <= 1e-4


def test_bn_pointwise_falls_back_to_pytorch_off_channels_last():
    inputs = _inputs(torch.float32, affine=True, gate=True)
    x = inputs[0].contiguous()  # NCHW memory: not what the kernels take
    assert not bnp.usable(x)
    fused = bnp.bn_pointwise(x, *inputs[1:], act=True)
    reference = bnp.bn_pointwise_reference(x, *inputs[1:], act=True)
    for value, expected in zip(fused, reference, strict=True):
        assert torch.equal(value, expected)


@needs_triton
def test_bn_pointwise_runs_under_deterministic_algorithms():
    """No atomics (every partial sum is added up by PyTorch): with deterministic algorithms asked for, the
    kernels still run, and two runs give the same bits."""
    inputs = _inputs(torch.float32, affine=True, gate=True)
    torch.use_deterministic_algorithms(True)
    try:
        assert bnp.usable(inputs[0])
        first, second = _run(bnp.bn_pointwise, inputs, True), _run(bnp.bn_pointwise, inputs, True)
    finally:
        torch.use_deterministic_algorithms(False)
    for value, again in zip(first, second, strict=True):
        assert torch.equal(value, again)


def test_bn_pointwise_wants_scale_and_shift_together():
    x, weight, scale, _, _ = _inputs(torch.float32, affine=True, gate=False)
    with pytest.raises(ValueError, match="scale and shift together"):
        bnp.bn_pointwise(x, weight, scale, None)


@needs_triton
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.float64])
def test_bn_pointwise_operators_pass_pytorchs_operator_checks(weight_dtype):
    """Schema, fake functions, autograd registration and AOT dispatch, as `torch.compile` relies on; with the
    weight in x's dtype (used as it is) and in another (the operator returns its copy, as under autocast)."""
    x, weight, scale, shift, gate = _inputs(torch.float32, affine=True, gate=True, shape=(2, 12, 3, 5),
                                            out_channels=8)
    weight = weight.to(weight_dtype).requires_grad_()
    results = torch.library.opcheck(bnp._forward_op, (x, weight, scale, shift, gate, True))
    assert set(results.values()) == {"SUCCESS"}, results


@needs_triton
def test_compiled_chain_traces_the_operators_in_one_graph():
    """`torch.compile(fullgraph=True)` traces the chained layers through the forward operator and its
    backward operator, and gives the eager gradients."""
    backend, graphs = graph_recorder()
    torch.manual_seed(24)
    model = _Composite().to(DEVICE).train()
    x = torch.randn(2, 12, 3, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(model.fused, fullgraph=True, backend=backend)
    y = compiled(x)
    grads = torch.autograd.grad(y.square().sum(), list(model.parameters()))
    expected = torch.autograd.grad(model.fused(x).square().sum(), list(model.parameters()))
    assert "effnet.bn_pointwise.default" in graphs["forward"]
    assert "effnet.bn_pointwise_backward.default" in graphs["backward"]  # the operator: both gradients
    for grad, reference in zip(grads, expected, strict=True):
        assert relative_error(grad, reference) <= 1e-5
