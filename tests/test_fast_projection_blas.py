"""A projection's training 1x1 conv through the library's matrix products (`effnet.fast.projection_blas`), where
a tuning file names it for a normalised layer: the same output, batch statistics and gradients as the PyTorch
composite, any pass alone or all three, the Triton kernels doing the rest; with the SE (`se_projection`: the gate
and its pool's gradient) and without (`bn_pointwise` with bn2 and the SiLU).

Float32 under Triton's interpreter when there is no GPU, on tiny shapes: ragged maps, channels off the tiles,
several activation chunks per image.
"""
import pytest
import torch

from effnet.fast import bn_pointwise as bnp
from effnet.fast import projection_blas, tuning
from effnet.fast import se_projection as sep
from kernel_helpers import DEVICE, POINTWISE_FUNCTIONS as FUNCTIONS, POINTWISE_PASSES as PASSES
from kernel_helpers import needs_triton, outputs_and_gradients, relative_error, spy_calls, use_pointwise_library
from test_fast_se_projection import NAMES
from test_fast_se_projection import _inputs as se_inputs

@pytest.fixture(autouse=True)
def _small_tiles_and_no_tuning_left_behind(monkeypatch):
    monkeypatch.setattr(bnp, "_INTERPRET_TILES", (16, 16, 16, 4, 1))
    monkeypatch.setattr(sep, "_POOL_TILES", (8, 16, 4))
    monkeypatch.setattr(projection_blas, "_ACTIVATION_TILES", (8, 16, 4))
    yield
    tuning.use(None)


@needs_triton
@pytest.mark.parametrize("passes", ["forward", "input", "weight", "all"])
def test_se_projection_passes_through_the_library_equal_the_composite(tmp_path, monkeypatch, passes):
    """y, its mean and variance, dx, dweight, dscale, dshift and the SE's gradients within 1e-5 of the
    composite, each pass alone on the library form or all three; dx channels-last."""
    inputs = se_inputs(torch.float32, shape=(3, 20, 5, 7))
    expected = outputs_and_gradients(sep.se_projection_reference, inputs, 51)
    use_pointwise_library(tmp_path, PASSES[passes], inputs[0], inputs[1].shape[0], normalized=True)
    calls = spy_calls(monkeypatch, projection_blas, FUNCTIONS.values())
    fused = outputs_and_gradients(sep.se_projection, inputs, 51)
    assert sorted(calls) == sorted(FUNCTIONS[op] for op in PASSES[passes])
    for name, value, reference in zip(NAMES, fused, expected, strict=True):
        assert value.shape == reference.shape and value.dtype == reference.dtype, name
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
    assert fused[3].is_contiguous(memory_format=torch.channels_last)


@needs_triton
@pytest.mark.parametrize("gated", [False, True])
def test_bn_pointwise_on_a_normalised_input_through_the_library(tmp_path, monkeypatch, gated):
    """bn_pointwise with bn2 and the SiLU (and a gate given as a tensor: its gradient from the weight gradient's
    pass), every pass on the library form: within 1e-5 of the composite."""
    x, weight, scale, shift = se_inputs(torch.float32, shape=(2, 20, 6, 5))[:4]
    gate = torch.rand(2, 20, device=DEVICE) + 0.2 if gated else None
    tensors = (x, weight, scale, shift, gate)
    expected = outputs_and_gradients(bnp.bn_pointwise_reference, tensors, 52, act=True)
    use_pointwise_library(tmp_path, PASSES["all"], x, weight.shape[0], normalized=True)
    calls = spy_calls(monkeypatch, projection_blas, FUNCTIONS.values())
    fused = outputs_and_gradients(bnp.bn_pointwise, tensors, 52, act=True)
    assert sorted(calls) == sorted(FUNCTIONS.values())
    names = ["y", "mean", "var", "dx", "dweight", "dscale", "dshift", "dgate"][:len(fused)]
    for name, value, reference in zip(names, fused, expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))


@needs_triton
def test_the_library_backward_makes_its_products_once(tmp_path, monkeypatch):
    """Both gradients on the library form share g and da = g W: one product for da a backward, not two."""
    inputs = se_inputs(torch.float32)
    use_pointwise_library(tmp_path, PASSES["all"], inputs[0], inputs[1].shape[0], normalized=True)
    real_mm, shapes = torch.mm, []

    def mm(p, q, **kwargs):
        shapes.append((tuple(p.shape), tuple(q.shape)))
        return real_mm(p, q, **kwargs)

    monkeypatch.setattr(torch, "mm", mm)
    outputs_and_gradients(sep.se_projection, inputs, 53)
    x, weight = inputs[:2]
    rows = x.numel() // x.shape[1]
    da_products = [s for s in shapes if s == ((rows, weight.shape[0]), tuple(weight.shape))]
    assert len(da_products) == 1, shapes


@needs_triton
def test_se_projection_half_precision_through_the_library(tmp_path):
    """float16 (the interpreter's half type) within rounding of the composite, with a and da stored in 16 bits."""
    inputs = se_inputs(torch.float16, shape=(2, 36, 9, 9), out_channels=40, reduced=9)
    use_pointwise_library(tmp_path, PASSES["all"], inputs[0], inputs[1].shape[0], normalized=True)
    fused = outputs_and_gradients(sep.se_projection, inputs, 54)
    reference = outputs_and_gradients(sep.se_projection_reference, inputs, 54)
    for name, value, expected in zip(NAMES, fused, reference, strict=True):
        assert value.dtype == expected.dtype, name
        assert relative_error(value.float(), expected.float()) <= 3e-3, (name, relative_error(value.float(),
                                                                                             expected.float()))


@needs_triton
def test_the_se_projection_operators_on_the_library_form_pass_pytorchs_operator_checks(tmp_path, monkeypatch):
    """Schema, fake functions (the library form's outputs have the Triton passes' shapes, dtypes and strides),
    autograd registration and AOT dispatch, with every pass on the library form."""
    x, weight, scale, shift, *se = se_inputs(torch.float32, shape=(2, 12, 3, 5), out_channels=8, reduced=3)
    use_pointwise_library(tmp_path, PASSES["all"], x, weight.shape[0], normalized=True)
    calls = spy_calls(monkeypatch, projection_blas, FUNCTIONS.values())
    args = (x.requires_grad_(), weight.requires_grad_(), scale, shift,
            *(t.flatten(1) if t.dim() == 4 else t for t in se))
    results = torch.library.opcheck(sep._forward_op, args)
    assert set(results.values()) == {"SUCCESS"}, results
    assert set(calls) == set(FUNCTIONS.values())


@needs_triton
def test_the_activation_pass_writes_a_and_sums_the_gates_gradient_per_image():
    """a = silu(x * scale + shift) * gate[n], and dgate[n, c] the sum over image n's pixels of da * silu(...),
    with each image cut into several chunks (its last one ragged)."""
    x, _, scale, shift = se_inputs(torch.float32, shape=(3, 20, 5, 7))[:4]
    gate = torch.rand(3, 20, device=DEVICE)
    da = torch.randn_like(x)
    a, dgate = projection_blas.activation(x, scale, shift, gate, True, da)
    s = torch.nn.functional.silu(x * scale[:, None, None] + shift[:, None, None])
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(a, s * gate[:, :, None, None]) <= 1e-6
    assert relative_error(dgate, (da * s).sum((2, 3))) <= 1e-6
    assert projection_blas.activation(x, scale, shift, None, True, da)[1] is None  # no gate, no gradient for it


def test_a_blas_entry_for_a_normalised_layer_is_accepted(tmp_path):
    key = dict(in_channels=672, out_channels=112, height=14, width=14, normalized=True)
    path = tmp_path / "tuning.json"
    tuning.record(path, "bn_pointwise_input_grad", key, "blas", [], device="test", seconds=1, default_seconds=2)
    tuning.use(path)
    assert tuning.lookup("bn_pointwise_input_grad", **key)["kernel"] == "blas"
    assert tuning.lookup("bn_pointwise_input_grad", **dict(key, normalized=False)) is None


@needs_triton
def test_affine_grads_gate_and_pool_equal_autograds():
    """`affine_grad` with a gate per image and channel, and a pool's gradient added to the activation's: dx, dscale
    and dshift as autograd gives them for out = silu(x * scale + shift) * gate[n, c], with the pool's gradient
    reaching silu(...) at every pixel of its image (each chunk of rows spanning images: a 5 x 7 map)."""
    from effnet.fast.affine_grad import affine_grad

    x, _, scale, shift = se_inputs(torch.float32, shape=(3, 20, 5, 7))[:4]
    gate, pool = torch.rand(3, 20, device=DEVICE), torch.randn(3, 20, device=DEVICE)
    g = torch.randn_like(x)
    leaves = [t.detach().clone().requires_grad_() for t in (x, scale, shift)]
    s = torch.nn.functional.silu(leaves[0] * leaves[1][:, None, None] + leaves[2][:, None, None])
    loss = (s * gate[:, :, None, None] * g).sum() + (s.sum((2, 3)) * pool).sum()
    expected = torch.autograd.grad(loss, leaves)
    dx, daffine = affine_grad(g, x, scale, shift, act=True, gate=gate, pool=pool)
    assert dx.is_contiguous(memory_format=torch.channels_last)
    for name, value, reference in zip(["dx", "dscale", "dshift"], [dx, *daffine], expected, strict=True):
        assert relative_error(value, reference) <= 1e-5, (name, relative_error(value, reference))
