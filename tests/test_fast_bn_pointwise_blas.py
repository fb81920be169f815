"""An expansion's training 1x1 conv through the library's matrix products (`effnet.fast.bn_pointwise_blas`), where
a tuning file names it for a layer shape: the same output, batch statistics and gradients as the PyTorch
composite, any pass alone or all three, the Triton kernels doing the rest; passed over for layers whose input is
activated or gated without a batch norm (y not linear in x there; a normalised input takes `projection_blas`).

Float32 under Triton's interpreter when there is no GPU (the library form itself runs on any device).
"""
import pytest
import torch

from effnet.fast import bn_pointwise as bnp
from effnet.fast import bn_pointwise_blas as blas
from effnet.fast import tuning
from kernel_helpers import DEVICE, POINTWISE_FUNCTIONS as FUNCTIONS, POINTWISE_PASSES as PASSES
from kernel_helpers import needs_triton, outputs_and_gradients, relative_error, spy_calls, use_pointwise_library

@pytest.fixture(autouse=True)
def _small_tiles_and_no_tuning_left_behind(monkeypatch):
    monkeypatch.setattr(bnp, "_INTERPRET_TILES", (16, 16, 16, 4, 1))
    yield
    tuning.use(None)


def _expansion(dtype=torch.float32, shape=(2, 8, 16, 16), out_channels=40, offset=1.5):
    """(x, weight): a block input whose channels' means lie off zero (`offset` times a normal draw), so the
    statistics' covariance form is tested where E[x x^T] and mu mu^T are both large."""
    torch.manual_seed(31)
    x = torch.randn(shape, device=DEVICE) + offset * torch.randn(shape[1], 1, 1, device=DEVICE)
    weight = torch.randn(out_channels, shape[1], device=DEVICE) / shape[1] ** 0.5
    return x.to(dtype).contiguous(memory_format=torch.channels_last), weight


@needs_triton
@pytest.mark.parametrize("passes", ["forward", "input", "weight", "all"])
def test_blas_passes_equal_the_composite(tmp_path, monkeypatch, passes):
    """Each pass through the library where the tuning file says so: y, its mean and variance, dx and dweight
    within 1e-5 of the composite; dx channels-last."""
    x, weight = _expansion()
    expected = outputs_and_gradients(bnp.bn_pointwise_reference, (x, weight), 32)
    use_pointwise_library(tmp_path, PASSES[passes], x, weight.shape[0], normalized=False)
    calls = spy_calls(monkeypatch, blas, FUNCTIONS.values())
    fused = outputs_and_gradients(bnp.bn_pointwise, (x, weight), 32)
    assert sorted(calls) == sorted(FUNCTIONS[op] for op in PASSES[passes])
    for name, value, reference in zip(["y", "mean", "var", "dx", "dweight"], fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
    assert fused[0].is_contiguous(memory_format=torch.channels_last)
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


def test_blas_form_in_half_precision_is_within_rounding():
    """float16 on this device (the library form needs no Triton): within the dtype's rounding of the composite
    run in float32 on the same rounded inputs."""
    from effnet.fast import bn_stats

    x, weight = _expansion(torch.float16)
    reference = outputs_and_gradients(bnp.bn_pointwise_reference, (x.float(), weight.half().float()), 33)
    y, mean, var = blas.forward(x, weight.half())
    generator = torch.Generator(device=DEVICE).manual_seed(33)
    dy, dmean, dvar = (torch.randn(t.shape, device=DEVICE, generator=generator) for t in (y, mean, var))
    stats = bn_stats.gradient_stats(dmean, dvar, mean, y)
    dx = blas.input_grad(dy.half(), stats, x, weight.half())
    dweight = blas.weight_grad(dy.half(), stats, x, weight.half())
    for name, value, expected in zip(["y", "mean", "var", "dx", "dweight"], [y, mean, var, dx, dweight], reference,
                                     strict=True):
        assert relative_error(value.float(), expected) <= 5e-3, (name, relative_error(value.float(), expected))


@needs_triton
def test_the_operators_on_the_library_form_pass_pytorchs_operator_checks(tmp_path, monkeypatch):
    """Schema, fake functions (the form's outputs have the Triton passes' shapes, dtypes and strides), autograd
    registration and AOT dispatch, as `torch.compile` relies on, with every pass on the library form."""
    x, weight = _expansion(shape=(2, 8, 3, 5), out_channels=24)
    use_pointwise_library(tmp_path, PASSES["all"], x, weight.shape[0], normalized=False)
    calls = spy_calls(monkeypatch, blas, FUNCTIONS.values())
    results = torch.library.opcheck(bnp._forward_op, (x.requires_grad_(), weight.double().requires_grad_(), None,
                                                      None, None, False))
    assert set(results.values()) == {"SUCCESS"}, results
    assert set(calls) == set(FUNCTIONS.values())


def test_autocast_does_not_round_the_float32_moments():
    """Autocast reaches into a custom operator's implementation (the fused training runs under it): the form's
    float32 products of the moments (mean, variance, the gradients' corrections) stay float32 there."""
    from effnet.fast import bn_stats

    x, weight = _expansion(torch.bfloat16)
    weight = weight.bfloat16()
    y, mean, var = blas.forward(x, weight)
    stats = bn_stats.gradient_stats(torch.randn_like(mean), torch.randn_like(var), mean, y)
    dy = torch.randn_like(y)
    plain = [y, mean, var, blas.input_grad(dy, stats, x, weight), blas.weight_grad(dy, stats, x, weight)]
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        autocast = [*blas.forward(x, weight), blas.input_grad(dy, stats, x, weight),
                    blas.weight_grad(dy, stats, x, weight)]
    assert [t.dtype for t in autocast] == [torch.bfloat16, torch.float32, torch.float32, torch.bfloat16, torch.float32]
    assert all(torch.equal(a, b) for a, b in zip(autocast, plain, strict=True))


def test_sums_of_products_over_row_chunks_equal_one_product():
    """x^T x and dy^T x over many rows split into equal chunks (a batch of products summed after)."""
    torch.manual_seed(34)
    p, q = torch.randn(4096, 24, dtype=torch.float64), torch.randn(4096, 8, dtype=torch.float64)
    assert blas._chunks(4096, 8, 4) == 64 and blas._chunks(4095, 8, 4) == 63  # the most that divide the rows
    assert blas._chunks(4096, 1024, 2) == 1  # wide products: the partials would outweigh the rows read
    assert torch.allclose(blas.sum_of_products(p.float(), q.float()).double(), p.float().double().t() @
                          q.float().double(), rtol=1e-5, atol=1e-4)


@needs_triton
@pytest.mark.parametrize("act, gate", [(True, False), (False, True)])
def test_an_activated_or_gated_input_keeps_the_triton_kernels(tmp_path, monkeypatch, act, gate):
    """y is linear in x only where x is taken as it is: with a SiLU or a gate before the conv (keyed as
    unnormalised all the same) the tuning file's library form is passed over."""
    x, weight = _expansion(shape=(2, 8, 5, 6))
    gates = torch.rand(2, 8, device=DEVICE) if gate else None
    use_pointwise_library(tmp_path, PASSES["all"], x, weight.shape[0], normalized=False)
    calls = spy_calls(monkeypatch, blas, FUNCTIONS.values())
    fused = outputs_and_gradients(bnp.bn_pointwise, (x, weight, None, None, gates), 35, act=act)
    expected = outputs_and_gradients(bnp.bn_pointwise_reference, (x, weight, None, None, gates), 35, act=act)
    assert calls == []
    for value, reference in zip(fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5


def test_a_blas_entry_takes_no_tiles(tmp_path):
    key = dict(in_channels=16, out_channels=96, height=8, width=8, normalized=False)
    path = tmp_path / "tuning.json"
    tuning.record(path, "bn_pointwise_weight_grad", key, "blas", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    assert tuning.lookup("bn_pointwise_weight_grad", **key)["kernel"] == "blas"
    tiled = tmp_path / "tiled.json"
    tuning.record(tiled, "bn_pointwise", key, "blas", [64, 64, 32, 4, 3], device="test", seconds=1,
                  default_seconds=2)
    with pytest.raises(tuning.TuningError, match="bn_pointwise blas tiles must be 0 whole numbers"):
        tuning.use(tiled)
