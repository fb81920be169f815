"""Every fast path computes the reference model's function.

The fused inference model (BN folded, channels-last, fused MBConv) is held to the plain model at
relative error 1e-5: full-size family members in float64 through PyTorch, a tiny one in float32
through the Triton kernels. BN statistics come from a random batch, so the logits really depend on
the input (with arbitrary ones the signal fades and any error would pass). Without a GPU the
kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET=1), on deliberately tiny shapes.
The memory savers are held to the plain model's outputs, gradients and running statistics.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import effnet
from effnet.fast import kernels, ops, optimize_for_inference
from effnet.fast.memory import enable_memory_saving
from kernel_helpers import DEVICE, needs_triton, randomise_batchnorm, relative_error, tiny


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_b0", "efficientnet_lite0", "mobilenet_v2"])
def test_optimized_model_equals_reference(name):
    """In float64: with the signal alive through 16+ random blocks, float32 rounding alone moves the
    plain model's logits by up to 1.4e-4 (Lite0), so float32 could not hold folding to 1e-5 here;
    the float32 kernels are held to 1e-5 on the tiny model below. (The SE runs in float64 too: float32 SEs
    moved these logits by 1.5e-5 on an AVX-512 CPU.)"""
    torch.manual_seed(0)
    model = randomise_batchnorm(effnet.create_model(name, num_classes=10)).double().eval()
    fast = optimize_for_inference(model, use_triton=False)
    for shape in [(2, 3, 64, 64), (1, 3, 45, 37)]:  # odd sizes: "same" padding's extra row and column
        x = torch.randn(shape, dtype=torch.float64)
        with torch.inference_mode():
            assert relative_error(fast(x), model(x)) <= 1e-5


def test_optimized_model_is_a_copy_and_fuses_every_silu_mbconv():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model, use_triton=False)
    fused = [m for m in fast.modules() if isinstance(m, effnet.fast.FusedMBConv)]
    assert len(fused) == sum(len(stage) for stage in model.blocks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name, fused", [("efficientnet_b0", True), ("tf_efficientnet_b0", True),
                                         ("efficientnet_lite0", False)])
def test_a_silu_head_conv_becomes_one_product_with_its_bias_and_keeps_its_keys(name, fused):
    """The head conv and its SiLU as one matrix product with the bias in its epilogue (`FusedHead`), not a conv,
    a bias pass and a SiLU pass; Lite's ReLU6 head stays the folded conv. The same keys, the same function (on
    channels-last maps, as the blocks hand them over, and on others)."""
    model = randomise_batchnorm(tiny(name, width=0.1)).eval()
    fast = optimize_for_inference(model, use_triton=False)
    assert isinstance(fast.model.conv_head, effnet.fast.fused.FusedHead) is fused
    assert isinstance(fast.model.act2, nn.Identity) is fused
    assert fast.state_dict().keys() == optimize_for_inference(model, use_triton=False, fuse=False).state_dict().keys()
    x = torch.randn(2, 3, 64, 48)
    with torch.inference_mode():
        assert relative_error(fast(x), model(x)) <= 1e-5
        if fused:
            head = fast.model.conv_head
            features = torch.randn(2, head.weight.shape[1], 3, 5)
            expected = F.silu(F.conv2d(features, head.weight, head.bias))
            for layout in (torch.channels_last, torch.contiguous_format):
                y = head(features.contiguous(memory_format=layout))
                assert y.is_contiguous(memory_format=torch.channels_last)
                assert relative_error(y, expected) <= 1e-6
    if fused:  # autograd on (torch.export traces so; a caller may forget no_grad): the SiLU is not in place there
        assert relative_error(head(features), expected) <= 1e-6


def test_pytorch_pointwise_gates_in_place_only_when_asked_and_autograd_does_not_need_x():
    """The fused block's x is its own scratch, so its gated 1x1 scales it in place (a fresh activation-sized
    tensor fewer per block on a CPU); the same values, and a caller's x is untouched unless it asks."""
    torch.manual_seed(3)
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    weight, gate = torch.randn(4, 8, 1, 1), torch.rand(2, 8)
    args = (weight, weight.flatten(1).t().contiguous(), torch.randn(4))
    kept = x.clone()
    expected = ops.pointwise(x, *args, act=False, gate=gate, use_triton=False)
    assert torch.equal(x, kept)
    with torch.inference_mode():
        scratch = x.clone()
        assert torch.equal(ops.pointwise(scratch, *args, act=False, gate=gate, use_triton=False,
                                         gate_in_place=True), expected)
        assert torch.equal(scratch, x * gate[:, :, None, None])  # gated where it lies
    leaf = x.clone().requires_grad_()
    out = ops.pointwise(leaf, *args, act=False, gate=gate, use_triton=False, gate_in_place=True)
    out.sum().backward()  # autograd needs the leaf: gated out of place
    assert torch.equal(leaf.detach(), x) and torch.equal(out.detach(), expected)


def test_optimize_for_inference_refuses_what_it_cannot_run():
    from effnet.export.errors import ExportError

    with pytest.raises(ExportError, match="dtype must be a floating-point dtype"):
        optimize_for_inference(tiny(), dtype=torch.int8)
    with pytest.raises(ExportError, match="needs an effnet classifier, got Linear"):
        optimize_for_inference(nn.Linear(2, 2))


def test_the_fast_names_and_submodules_load_on_first_use():
    """`import effnet` loads no fast path; `effnet.fast.memory.enable_memory_saving` (the README's spelling) and
    the names the package's docstring lists then import what they need."""
    import subprocess
    import sys

    script = ("import sys, effnet\n"
              "assert 'effnet.fast.memory' not in sys.modules\n"
              "assert effnet.fast.memory.enable_memory_saving is effnet.fast.enable_memory_saving\n"
              "assert effnet.fast.graphs.CudaGraphModule is effnet.fast.CudaGraphModule\n"
              "assert effnet.fast.fused_training.use_fused_training is effnet.fast.use_fused_training\n"
              "assert not hasattr(effnet.fast, 'nosuch')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@needs_triton


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_b0"])
def test_pytorch_fallback_copies_an_input_to_pad_it_only_for_asymmetric_tf_padding(name):
    """On a CPU the fast model is PyTorch's convs with BN folded: a padded copy of each depthwise input
    made its forward 1.4x slower. Only TF "same" padding at stride 2, asymmetric, pads a copy."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountPads(TorchDispatchMode):
        pads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.pads += func in (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
            return func(*args, **(kwargs or {}))

    model = effnet.create_model(name, num_classes=10).eval()
    fast = optimize_for_inference(model, use_triton=False)
    strided_same = sum(isinstance(m, effnet.models.layers.SameConv2d) for m in model.modules())
    with torch.inference_mode(), CountPads() as counter:
        fast(torch.randn(1, 3, 64, 64))
    assert counter.pads == strided_same
    assert (strided_same > 0) == name.startswith("tf_")
@pytest.mark.parametrize("kernel_size, stride, same, pool", [(3, 1, False, True), (5, 2, True, True),
                                                             (3, 2, False, False)])
def test_depthwise_kernel_equals_pytorch(kernel_size, stride, same, pool):
    torch.manual_seed(1)
    channels = 24  # not a multiple of the channel block: the tail is masked
    x = torch.randn(2, channels, 11, 9, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE)
    taps = weight.flatten(1).t().contiguous()
    bias = torch.randn(channels, device=DEVICE)
    y_ref, sums_ref = ops.depthwise(x, weight, taps, bias, stride=stride, same=same, pool=pool, use_triton=False)
    y, sums = ops.depthwise(x, weight, taps, bias, stride=stride, same=same, pool=pool, use_triton=True)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(y, y_ref) <= 1e-5
    if pool:
        assert relative_error(sums, sums_ref) <= 1e-5
    else:
        assert sums is None and sums_ref is None


@needs_triton
@pytest.mark.parametrize("tiles", [(2, 4, 16, 2, 4), (4, 2, 8, 3, 4)])
def test_depthwise_kernel_two_dimensional_tiles_cover_every_pixel(tiles):
    """Tiles of several rows (BLOCK_H > 1), several per program, ragged at the bottom and right."""
    torch.manual_seed(5)
    channels, kernel_size, stride = 24, 3, 1
    x = torch.randn(2, channels, 11, 9, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE)
    taps, bias = weight.flatten(1).t().contiguous(), torch.randn(channels, device=DEVICE)
    y_ref, sums_ref = ops.depthwise(x, weight, taps, bias, stride=stride, same=False, pool=True, use_triton=False)
    y, sums = kernels.depthwise(x, taps, bias, kernel_size=kernel_size, stride=stride, padding=(1, 1),
                                output_size=(11, 9), act=True, pool=True, tiles=tiles)
    assert relative_error(y, y_ref) <= 1e-5 and relative_error(sums, sums_ref) <= 1e-5


@needs_triton
@pytest.mark.parametrize("kernel_size, tiles", [(3, (8, 8, 16, 1, 4)), (3, (2, 4, 16, 2, 4)), (5, (1, 16, 16, 1, 4)),
                                                (5, (2, 2, 16, 3, 4)), (5, (4, 4, 16, 1, 4))])
def test_depthwise_kernel_warmed_taps_compute_the_same_conv(kernel_size, tiles):
    """With a sixth tile value of 1 the taps run in two phases, the first covering each tile's whole input halo
    (so the second finds its lines in L1 on a GPU): the same conv and SE sums, border and interior tiles alike,
    tiles narrower than the window (2 x 2 for 5 x 5: taps 0, 2 and 4 of each row and column first) too."""
    torch.manual_seed(11)
    channels = 24
    x = torch.randn(1, channels, 11, 15, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE)
    taps, bias = weight.flatten(1).t().contiguous(), torch.randn(channels, device=DEVICE)
    y_ref, sums_ref = ops.depthwise(x, weight, taps, bias, stride=1, same=False, pool=True, use_triton=False)
    output_size, padding = ops.conv_geometry(x, kernel_size, 1, same=False)
    y, sums = kernels.depthwise(x, taps, bias, kernel_size=kernel_size, stride=1, padding=padding,
                                output_size=output_size, act=True, pool=True, tiles=(*tiles, 1))
    assert relative_error(y, y_ref) <= 1e-5 and relative_error(sums, sums_ref) <= 1e-5
    with pytest.raises(ValueError, match="stride 1"):
        kernels.depthwise(x, taps, bias, kernel_size=kernel_size, stride=2, padding=padding, output_size=(7, 10),
                          act=True, pool=True, tiles=(*tiles, 1))


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, channels, tiles", [(3, 1, 32, (2, 4, 16, 2, 4)),
                                                                  (3, 2, 24, (2, 2, 16, 1, 4)),
                                                                  (5, 1, 32, (1, 4, 16, 3, 4)),
                                                                  (5, 2, 16, (2, 2, 16, 1, 4))])
def test_depthwise_kernel_interior_tiles_load_without_masks(kernel_size, stride, channels, tiles):
    """Tiles whose taps all read inside a 12 x 13 map take the unmasked loads (and, where the channel blocks are
    whole, no channel mask); tiles on its borders and past its output test every tap. Both kinds occur here."""
    torch.manual_seed(9)
    x = torch.randn(1, channels, 12, 13, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE)
    taps, bias = weight.flatten(1).t().contiguous(), torch.randn(channels, device=DEVICE)
    y_ref, sums_ref = ops.depthwise(x, weight, taps, bias, stride=stride, same=False, pool=True, use_triton=False)
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same=False)
    y, sums = kernels.depthwise(x, taps, bias, kernel_size=kernel_size, stride=stride, padding=padding,
                                output_size=output_size, act=True, pool=True, tiles=tiles)
    assert relative_error(y, y_ref) <= 1e-5 and relative_error(sums, sums_ref) <= 1e-5
    # Both kinds of tile occur: rows (top) and columns (left) of tiles whose taps stay inside the map.
    block_h, block_w = tiles[:2]

    def inside(start: int, block: int, size: int, out: int, pad: int) -> bool:
        return start * stride - pad >= 0 and (start + block - 1) * stride - pad + kernel_size <= size and \
            start + block <= out

    rows = [inside(top, block_h, 12, output_size[0], padding[0]) for top in range(0, output_size[0], block_h)]
    columns = [inside(left, block_w, 13, output_size[1], padding[1]) for left in range(0, output_size[1], block_w)]
    assert any(rows) and any(columns) and not (all(rows) and all(columns))


@needs_triton
@pytest.mark.parametrize("pixels", [(5, 7), (4, 4)])  # 35 pixels: tiles end inside an image; 16: on its edge
def test_pointwise_gate_on_weights_equals_gate_on_activations(pixels):
    torch.manual_seed(6)
    batch, in_channels, out_channels = 3, 40, 24
    x = torch.randn(batch, in_channels, *pixels, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, in_channels, 1, 1, device=DEVICE)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(out_channels, device=DEVICE)
    gates = torch.rand(batch, in_channels, device=DEVICE)
    shortcut = torch.randn(batch, out_channels, *pixels, device=DEVICE).contiguous(memory_format=torch.channels_last)
    expected = ops.pointwise(x, weight, weight_t, bias, act=False, gate=gates, residual=shortcut.clone(),
                             use_triton=False)
    output = kernels.pointwise(x, weight_t, bias, act=False, gate=gates, residual=shortcut, gate_weights=True)
    assert relative_error(output, expected) <= 1e-5


@needs_triton
def test_pointwise_gate_on_rows_two_gate_rows_per_tile_equal_the_gathered_gate(monkeypatch):
    """With the gate on the activations, 16-row tiles of 35-pixel images take two gate rows and pick one per row
    (GATE 3); 64-row tiles, longer than an image, gather the gate per row (GATE 1): the same values up to the
    order of the float32 sums (the interpreter's products take the tile's rows; a wrong gate row would be off by
    whole units)."""
    torch.manual_seed(8)
    batch, in_channels, out_channels = 4, 40, 24
    x = torch.randn(batch, in_channels, 5, 7, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, in_channels, 1, 1, device=DEVICE)
    weight_t, bias = weight.flatten(1).t().contiguous(), torch.randn(out_channels, device=DEVICE)
    gates = torch.rand(batch, in_channels, device=DEVICE)
    expected = ops.pointwise(x, weight, weight_t, bias, act=True, gate=gates, use_triton=False)
    modes, kernel = [], kernels._pointwise_kernel

    class Spy:  # the launches' GATE, then the real kernel
        def __getitem__(self, grid):
            return lambda *args, **options: modes.append(options["GATE"]) or kernel[grid](*args, **options)

    monkeypatch.setattr(kernels, "_pointwise_kernel", Spy())
    two_rows = kernels.pointwise(x, weight_t, bias, act=True, gate=gates, tiles=(16, 16, 16, 4, 1), gate_weights=False)
    gathered = kernels.pointwise(x, weight_t, bias, act=True, gate=gates, tiles=(64, 16, 16, 4, 1), gate_weights=False)
    assert modes == [3, 1]
    assert relative_error(two_rows, expected) <= 1e-5 and relative_error(two_rows, gathered) <= 1e-6


@needs_triton
@pytest.mark.parametrize("gate, residual, act", [(False, False, True), (True, True, False), (True, False, False)])
def test_pointwise_kernel_equals_pytorch(gate, residual, act):
    torch.manual_seed(2)
    batch, in_channels, out_channels, height, width = 3, 40, 24, 5, 7  # rows and channels off the block sizes
    x = torch.randn(batch, in_channels, height, width, device=DEVICE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, in_channels, 1, 1, device=DEVICE)
    bias = torch.randn(out_channels, device=DEVICE)
    gates = torch.rand(batch, in_channels, device=DEVICE) if gate else None
    shortcut = (torch.randn(batch, out_channels, height, width, device=DEVICE)
                .contiguous(memory_format=torch.channels_last) if residual else None)
    weight_t = weight.flatten(1).t().contiguous()
    expected = ops.pointwise(x, weight, weight_t, bias, act=act, gate=gates,
                             residual=None if shortcut is None else shortcut.clone(), use_triton=False)
    output = ops.pointwise(x, weight, weight_t, bias, act=act, gate=gates, residual=shortcut, use_triton=True)
    assert relative_error(output, expected) <= 1e-5


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, same, pool", [(3, 1, False, True), (5, 2, True, True),
                                                             (3, 2, False, False)])
def test_expand_depthwise_kernel_equals_the_two_passes(kernel_size, stride, same, pool):
    torch.manual_seed(4)
    in_channels, channels = 20, 40  # neither a multiple of the blocks: the tails are masked
    x = torch.randn(1, in_channels, 7, 9, device=DEVICE).contiguous(memory_format=torch.channels_last)
    expand_weight = torch.randn(channels, in_channels, 1, 1, device=DEVICE) / 4
    expand = (expand_weight, expand_weight.flatten(1).t().contiguous(), torch.randn(channels, device=DEVICE))
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE)
    depthwise = (weight, weight.flatten(1).t().contiguous(), torch.randn(channels, device=DEVICE))
    y_ref, sums_ref = ops.expand_depthwise(x, expand, depthwise, stride=stride, same=same, pool=pool,
                                           use_triton=False)
    y, sums = ops.expand_depthwise(x, expand, depthwise, stride=stride, same=same, pool=pool, use_triton=True)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(y, y_ref) <= 1e-5
    assert sums is None if not pool else relative_error(sums, sums_ref) <= 1e-5


def test_fused_expansion_applies_where_recomputing_is_cheap_and_keeps_the_function():
    model = tiny("tf_efficientnet_b0")
    fast = optimize_for_inference(model, use_triton=False, fuse_expansion=True)
    blocks = [m for m in fast.modules() if isinstance(m, effnet.fast.FusedMBConv)]
    # k²/s² <= 9: 3x3 and strided 5x5 blocks fold their expansion; 5x5 stride 1 and unexpanded ones do not.
    assert {(b.conv_dw.kernel_size[0], b.stride, b.fuse_expansion) for b in blocks if b.expands} == {
        (3, 1, True), (3, 2, True), (5, 2, True), (5, 1, False)}
    assert not any(b.fuse_expansion for b in blocks if not b.expands)
    x = torch.randn(2, 3, 45, 37)
    with torch.inference_mode():
        assert relative_error(fast(x), model(x)) <= 1e-5


@needs_triton
def test_triton_fused_model_equals_reference():
    model = tiny("tf_efficientnet_b0", width=0.1).to(DEVICE)  # "same" padding, every kernel size and stride
    x = torch.randn(2, 3, 15, 13, device=DEVICE)
    with torch.inference_mode():  # the bound below means something only if the logits follow the input
        assert relative_error(model(torch.randn_like(x)), model(x)) > 0.1
    # (The expansion-in-depthwise experiment, measured slower, is held to the two passes by its kernel test.)
    fast = optimize_for_inference(model, use_triton=True)
    with torch.inference_mode():
        assert relative_error(fast(x), model(x)) <= 1e-5


def test_forcing_triton_where_it_cannot_run_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRET", False)
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(RuntimeError, match="Triton kernels cannot run on a cpu tensor"):
        ops.pointwise(x, torch.randn(8, 8, 1, 1), torch.randn(8, 8), torch.zeros(8), act=True, use_triton=True)


def test_forcing_triton_past_its_32_bit_offsets_is_a_clear_error(monkeypatch):
    """The kernels' offsets are 32-bit: a pass whose widest tensor (here the 1x1 conv's output, 8 times its input)
    has more elements than that takes the PyTorch path by default, and forced onto Triton says why."""
    monkeypatch.setattr(kernels, "MAX_ELEMENTS", 1_000)
    x = torch.randn(1, 8, 4, 4)  # 128 elements in, 1,024 out
    with pytest.raises(RuntimeError, match="at most 1,000 elements .*this pass has 1,024"):
        ops.pointwise(x, torch.randn(64, 8, 1, 1), torch.randn(8, 64), torch.zeros(64), act=True, use_triton=True)


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(3)  # the same dropout and drop-path draws for both models
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["activations", "stages", "both"])
def test_memory_savers_keep_outputs_gradients_and_statistics(mode):
    reference = tiny().train()
    saving = enable_memory_saving(tiny().train(), mode)
    assert saving.state_dict().keys() == reference.state_dict().keys()
    # Batch statistics over 8 x 2 x 2 values at the last stage: float32 stays well conditioned.
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    loss_ref, grads_ref = _train_step(reference, x, y)
    loss, grads = _train_step(saving, x, y)
    assert torch.allclose(loss, loss_ref, rtol=1e-5)
    # One vector: a bias whose true gradient is zero (bn3's, when a training-mode BN follows
    # it) holds only rounding noise, so per-tensor relative errors would compare noise.
    assert relative_error(torch.cat([grads[n].flatten() for n in grads_ref]),
                          torch.cat([g.flatten() for g in grads_ref.values()])) <= 1e-5
    for (name, buffer), expected in zip(saving.named_buffers(), reference.buffers()):
        assert torch.allclose(buffer.float(), expected.float(), rtol=1e-5, atol=1e-6), name


@needs_triton
@pytest.mark.parametrize("mode", ["activations", "both"])
def test_the_activations_saver_runs_the_triton_passes_on_channels_last_maps(monkeypatch, mode):
    """Where the fused training's kernels run (channels-last maps on a GPU, here under the interpreter), each
    BatchNorm + SiLU of the "activations" saver takes `bn_act`'s Triton passes, which keep only the input, as the
    stem's and head's do in the fused training: the plain model's loss, gradients and running statistics within
    1e-5 (float32); with stage checkpoints too ("both": the recomputation runs them again, and the statistics stay
    as the forward left them)."""
    from effnet.fast import bn_act

    calls = []
    passes = bn_act.silu_batch_norm
    monkeypatch.setattr(bn_act, "silu_batch_norm", lambda bn, y: calls.append(bn) or passes(bn, y))
    reference = tiny().train().to(memory_format=torch.channels_last)
    saving = enable_memory_saving(tiny().train().to(memory_format=torch.channels_last), mode)
    x = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    loss_ref, grads_ref = _train_step(reference, x, y)
    loss, grads = _train_step(saving, x, y)
    pairs = sum(1 for m in saving.modules() if type(m).__name__ == "RecomputedBatchNormSiLU")
    assert len(calls) >= pairs > 0  # (each stage's again in the backward with "both")
    assert torch.allclose(loss, loss_ref, rtol=1e-5)
    assert relative_error(torch.cat([grads[n].flatten() for n in grads_ref]),
                          torch.cat([g.flatten() for g in grads_ref.values()])) <= 1e-5
    for (name, buffer), expected in zip(saving.named_buffers(), reference.buffers()):
        assert torch.allclose(buffer.float(), expected.float(), rtol=1e-5, atol=1e-6), name


def test_memory_saver_rejects_unknown_modes():
    with pytest.raises(ValueError, match="memory saver must be one of"):
        enable_memory_saving(tiny(), "everything")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_the_model_and_refuses_other_shapes():
    from effnet.fast.graphs import CudaGraphModule

    model = tiny().cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    graphed = CudaGraphModule(model, x)
    for _ in range(2):
        y = torch.randn_like(x)
        with torch.inference_mode():
            assert relative_error(graphed(y), model(y)) <= 1e-5
    with pytest.raises(ValueError, match="captured for"):
        graphed(torch.randn(1, 3, 32, 32, device="cuda"))


def test_cuda_graphs_need_a_cuda_input():
    from effnet.fast.graphs import CudaGraphModule

    with pytest.raises(ValueError, match="CUDA graphs need a CUDA input"):
        CudaGraphModule(tiny(), torch.randn(1, 3, 32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graph_training_step_trains_as_the_eager_step(compiled):
    """A captured training step replays forward, backward and the optimizer step: from the same weights and
    batch, the warm-up steps and the replays move the weights as that many eager steps do; a compiled model's
    too (`effnet bench --mode compile-cudagraphs`: its forward and backward compile in the warm-up steps)."""
    import copy

    from effnet.fast.graphs import CudaGraphTrainingStep

    from effnet.models import get_entry
    from effnet.scaling import scale_by_multipliers

    spec = scale_by_multipliers(get_entry("efficientnet_b0").spec, depth=0.25, width=0.25, name="b0_tiny")
    torch.manual_seed(0)  # no dropout or drop path: the graph's random numbers are not eager mode's
    eager = effnet.create_model(spec, num_classes=10, drop_rate=0.0, drop_path_rate=0.0).cuda().train()
    graphed = copy.deepcopy(eager)
    x, y = torch.randn(4, 3, 32, 32, device="cuda"), torch.randint(0, 10, (4,), device="cuda")

    def stepper(model, optimizer):
        def step():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
        return step

    graph_optimizer = torch.optim.SGD(graphed.parameters(), lr=0.1, momentum=0.9)
    forward = torch.compile(graphed, dynamic=False) if compiled else graphed
    replay = CudaGraphTrainingStep(stepper(forward, graph_optimizer), graph_optimizer, "cuda", warmup=2)
    for _ in range(3):
        replay()
    eager_optimizer = torch.optim.SGD(eager.parameters(), lr=0.1, momentum=0.9)
    step = stepper(eager, eager_optimizer)
    for _ in range(2 + 3):  # the warm-up steps and the replays (capturing records the step, runs nothing)
        eager_optimizer.zero_grad(set_to_none=True)
        step()
    for got, expected in zip(graphed.parameters(), eager.parameters(), strict=True):
        assert relative_error(got, expected) <= 1e-4


def test_cuda_graph_training_needs_a_cuda_device():
    from effnet.fast.graphs import CudaGraphTrainingStep

    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device; got cpu"):
        CudaGraphTrainingStep(lambda: model(torch.randn(1, 3, 32, 32)).sum(), optimizer, "cpu")


def test_the_tanh_silu_is_for_16_bit_outputs_on_a_gpu_only():
    """`kernels.act_mode`: float32 outputs, and every output here (no GPU, or the interpreter), keep the exact SiLU;
    the tanh form's error (about 2.5e-4 on the sigmoid) is under a 16-bit output's rounding, not float32's."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        out = torch.empty(2, dtype=dtype)
        assert kernels.act_mode(False, out) == kernels.NO_ACT
        assert kernels.act_mode(True, out) == kernels.SILU
    # The identity the tanh form computes: x * sigmoid(x) = x/2 + x/2 tanh(x/2).
    x = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    assert torch.allclose(x / 2 + x / 2 * torch.tanh(x / 2), F.silu(x), rtol=0, atol=1e-12)


def test_depthwise_taps_stay_float32_through_dtype_casts():
    """The fused blocks' depthwise taps are the conv's weights in its dtype, widened to float32 (the kernels take
    them without a conversion per tap), whatever `.to`, `.half()` or `optimize_for_inference(dtype=...)` did."""
    from effnet.fast.fused import FusedMBConv

    fast = optimize_for_inference(tiny("efficientnet_b0"), dtype=torch.bfloat16, use_triton=False)
    for model in (fast, fast.half()):
        blocks = [m for m in model.modules() if isinstance(m, FusedMBConv)]
        assert blocks
        for block in blocks:
            weight = block.conv_dw.weight
            assert block.dw_taps.dtype == torch.float32 and weight.dtype != torch.float32
            assert torch.equal(block.dw_taps, weight.flatten(1).t().float())


def test_excitation_equals_the_se_module():
    """`ops.excitation` from channel sums (the mean's 1/pixels folded into the first product) is the block's SE
    gate: sigmoid(expand(silu(reduce(mean))))."""
    torch.manual_seed(3)
    se = tiny("efficientnet_b0").blocks[1][0].se
    x = torch.randn(4, se.conv_reduce.in_channels, 7, 5)
    expected = torch.sigmoid(se.conv_expand(F.silu(se.conv_reduce(x.mean((2, 3), keepdim=True))))).flatten(1)
    gate = ops.excitation(x.sum((2, 3)), 35, se.conv_reduce, se.conv_expand)
    assert gate.dtype == torch.float32 and relative_error(gate, expected) <= 1e-6
