"""The banded depthwise pass (`effnet.fast.banded`): each kernel row of a depthwise conv as a matrix product with
a banded matrix of that row's taps, batched over channels. Float32 under Triton's interpreter when
there is no GPU (exact float32 products): equal to PyTorch's conv + SiLU + SE sums wherever a tile's rows span
images, its columns span several tiles or end in padding, and its channels end off the block; taken by the
fused model where a tuning file names it."""
import pytest
import torch

from effnet.fast import banded, ops, optimize_for_inference, tuning
from kernel_helpers import DEVICE, needs_triton, relative_error, tiny


@pytest.fixture(autouse=True)
def _no_tuning_left_behind():
    yield
    tuning.use(None)


@needs_triton
@pytest.mark.parametrize("kernel_size, stride, same, shape, tiles", [
    (3, 1, False, (2, 20, 9, 7), (16, 16, 16, 4)),    # 18 rows in 16-row tiles: tiles span images; 20 channels
    (5, 1, True, (3, 24, 7, 6), None),                 # TF "same" padding, the default tiles
    (3, 1, False, (1, 16, 5, 40), (16, 16, 16, 4)),   # 40 columns in tiles of 14 whole outputs: three tiles
    (5, 1, False, (1, 8, 12, 30), (32, 32, 8, 4)),    # one 32-column tile, 28 whole outputs: two tiles
    (3, 2, False, (2, 16, 9, 35), (32, 16, 16, 4)),   # stride 2: 18 outputs a row in tiles of 15 whole ones
    (5, 2, True, (2, 12, 11, 10), None),              # stride 2, TF "same" (uneven padding), default tiles
])
def test_banded_depthwise_equals_pytorch(kernel_size, stride, same, shape, tiles):
    torch.manual_seed(3)
    x = torch.randn(shape, device=DEVICE).contiguous(memory_format=torch.channels_last)
    channels = shape[1]
    weight = torch.randn(channels, 1, kernel_size, kernel_size, device=DEVICE)
    taps, bias = weight.flatten(1).t().contiguous(), torch.randn(channels, device=DEVICE)
    output_size, padding = ops.conv_geometry(x, kernel_size, stride, same)
    for act, pool in ((True, True), (False, False)):
        expected, expected_sums = ops.depthwise(x, weight, taps, bias, stride=stride, same=same, act=act, pool=True,
                                                use_triton=False)
        y, sums = banded.banded_depthwise(x, taps, bias, kernel_size=kernel_size, stride=stride, padding=padding,
                                          output_size=output_size, act=act, pool=pool, tiles=tiles)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert relative_error(y, expected) <= 1e-5
        assert (sums is None) if not pool else relative_error(sums, expected_sums) <= 1e-5


@pytest.mark.parametrize("stride", [1, 2])
def test_band_tables_hold_each_rows_taps_on_its_diagonals_and_follow_the_taps(stride):
    k, channels, width = 3, 4, 32
    taps = torch.randn(k * k, channels)
    tables = banded.band_tables(taps, k, stride, width, torch.float32)
    turned = banded.band_tables(taps, k, stride, width, torch.float32, flip=True)  # the kernel turned half a turn
    assert tables.shape == turned.shape == (k, channels, width, width // stride)
    for i in range(k):
        for w in range(width):
            for j in range(width // stride):
                offset = w - stride * j
                expected = taps[i * k + offset] if 0 <= offset < k else torch.zeros(channels)
                assert torch.equal(tables[i, :, w, j], expected)
                expected = taps[(k - 1 - i) * k + k - 1 - offset] if 0 <= offset < k else torch.zeros(channels)
                assert torch.equal(turned[i, :, w, j], expected)
    assert banded.band_tables(taps, k, stride, width, torch.float32) is tables  # made once
    taps.mul_(2)  # weights changed in place: made again
    assert torch.equal(banded.band_tables(taps, k, stride, width, torch.float32), 2 * tables)
    held = id(taps)
    assert sum(key[0] == held for key in banded._TABLES) == 2
    del taps, expected  # and let go with the taps (a training step's new taps each step must not pile up)
    assert not any(key[0] == held for key in banded._TABLES)


@pytest.mark.parametrize("stride, width", [(1, 24), (2, 16)])
def test_banded_tiles_must_be_a_power_of_two_of_16_outputs(stride, width):
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="power of two, at least 16 x the stride"):
        banded.banded_depthwise(x, torch.randn(9, 8), torch.randn(8), kernel_size=3, stride=stride, padding=(1, 1),
                                output_size=(6 // stride, 6 // stride), act=True, pool=False, tiles=(width, 16, 16, 4))


@needs_triton
def test_a_tuning_file_naming_the_banded_kernel_keeps_the_fused_model_equal(tmp_path, monkeypatch):
    model = tiny("efficientnet_b0", width=0.1).to(DEVICE)
    x = torch.randn(2, 3, 17, 15, device=DEVICE)
    keys = []

    def record(conv, inputs):
        _, channels, height, width = inputs[0].shape
        keys.append(dict(kernel_size=conv.kernel_size[0], stride=conv.stride[0], channels=channels, height=height,
                         width=width))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    with torch.inference_mode():
        expected = model(x)
    for hook in hooks:
        hook.remove()
    path = tmp_path / "tuning.json"
    for key in keys:  # every depthwise layer, strided too
        tuning.record(path, "depthwise", key, "banded", (16 * key["stride"], 16, 16, 4), device="test", seconds=1,
                      default_seconds=2)
    calls, real = [], banded.banded_depthwise
    monkeypatch.setattr(banded, "banded_depthwise", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    fast = optimize_for_inference(model, use_triton=True)
    tuning.use(path)
    with torch.inference_mode():
        out = fast(x)
    assert relative_error(out, expected) <= 1e-5
    assert len(calls) == len(keys) and {call["stride"] for call in calls} == {1, 2}
