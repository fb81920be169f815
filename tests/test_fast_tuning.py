"""A tuning file (per-layer kernel choices measured on a GPU) changes which kernel runs, never the result.

Float32 under Triton's interpreter when there is no GPU: the fused tiny model with every depthwise
layer on tuned tiles or the banded kernel and every 1x1 conv on tuned tiles (either gate) or
the streaming kernel still equals the plain model; the training depthwise takes tuned gradient
tiles; bad files are one clear error.
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from effnet.fast import banded, kernels, optimize_for_inference, streaming, tuning
from effnet.fast.depthwise_train import use_triton_depthwise
from kernel_helpers import DEVICE, layer_keys, needs_triton, relative_error, spy_kwargs, tiny


@pytest.fixture(autouse=True)
def _no_tuning_left_behind():
    yield
    tuning.use(None)


@needs_triton
def test_tuned_kernels_keep_the_fused_model_equal_to_the_reference(tmp_path, monkeypatch):
    model = tiny("tf_efficientnet_b0", width=0.1).to(DEVICE)  # "same" padding, every kernel size and stride
    x = torch.randn(2, 3, 15, 13, device=DEVICE)
    depthwise, pointwise = layer_keys(model, x)
    fast = optimize_for_inference(model, use_triton=True)
    path = tmp_path / "tuning.json"
    for key in depthwise:
        if key["stride"] == 1:
            tuning.record(path, "depthwise", key, "banded", (16, 16, 16, 4), device="test", seconds=1,
                          default_seconds=2)
        else:
            tuning.record(path, "depthwise", key, "tiled", (2, 4, 64, 1, 4), device="test", seconds=1,
                          default_seconds=2)
    for key in pointwise:
        if key["gated"] and key["height"] * key["width"] < 16:  # a gated stream's tiles lie in at most two images
            tuning.record(path, "pointwise", key, "tiled", (16, 64, 64, 4, 1), device="test", seconds=1,
                          default_seconds=2, gate_weights=False)
        else:
            tuning.record(path, "pointwise", key, "streaming", (16 if key["gated"] else 32, 64, 4, 1, 1),
                          device="test", seconds=1, default_seconds=2)
    band = spy_kwargs(monkeypatch, banded, "banded_depthwise")
    tiled = spy_kwargs(monkeypatch, kernels, "depthwise")
    streamed = spy_kwargs(monkeypatch, streaming, "pointwise_streaming")
    gated = spy_kwargs(monkeypatch, kernels, "pointwise")
    monkeypatch.setenv(tuning.ENV, str(path))
    tuning._active = None  # read the environment again, as a new process would
    with torch.inference_mode():
        out, expected = fast(x), model(x)
    assert relative_error(out, expected) <= 1e-5
    strided = sum(key["stride"] == 2 for key in depthwise)
    assert len(band) == len(depthwise) - strided and len(tiled) == strided > 0
    assert all(call["tiles"] == (2, 4, 64, 1, 4) for call in tiled)
    small_gated = sum(key["gated"] and key["height"] * key["width"] < 16 for key in pointwise)
    assert len(streamed) == len(pointwise) - small_gated and small_gated > 0
    assert sum(call["gate"] is not None for call in streamed) > 0  # gated layers streamed too
    assert len(gated) == small_gated
    assert all(call["gate_weights"] is False for call in gated)


@needs_triton
def test_training_depthwise_takes_tuned_gradient_tiles(tmp_path):
    conv = use_triton_depthwise(torch.nn.Conv2d(20, 20, 3, 2, 1, groups=20, bias=False).to(DEVICE))
    reference = copy.deepcopy(conv)
    x = torch.randn(1, 20, 9, 9, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_()
    key = dict(kernel_size=3, stride=2, channels=20, height=9, width=9)
    path = tmp_path / "tuning.json"
    tuning.record(path, "depthwise_input_grad", key, "tiled", (4, 4, 16, 4), device="test", seconds=1,
                  default_seconds=2)
    tuning.record(path, "depthwise_weight_grad", key, "tiled", (3, 1, 2, 16, 4), device="test", seconds=1,
                  default_seconds=2)
    tuning.use(path)
    grads = torch.autograd.grad(conv(x).square().sum(), (x, conv.weight))
    tuning.use(None)
    expected = torch.autograd.grad(F.conv2d(x, reference.weight, stride=2, padding=1, groups=20).square().sum(),
                                   (x, reference.weight))
    assert all(relative_error(g, e) <= 1e-5 for g, e in zip(grads, expected))
    # The tiles are really the file's: an impossible band is refused when the weight gradient runs.
    tuning.record(path, "depthwise_weight_grad", key, "tiled", (3, 2, 2, 16, 4), device="test", seconds=1,
                  default_seconds=2)
    tuning.use(path)
    with pytest.raises(ValueError, match="multiple of BLOCK_H"):
        torch.autograd.grad(conv(x).sum(), conv.weight)


def test_record_replaces_one_shape_and_keeps_the_others(tmp_path):
    path = tmp_path / "t.json"
    first = dict(kernel_size=5, stride=1, channels=240, height=28, width=28)
    second = dict(first, channels=480)
    tuning.record(path, "depthwise", first, "tiled", (1, 16, 64, 1, 4), device="gpu", seconds=2, default_seconds=3)
    tuning.record(path, "depthwise", second, "tiled", (1, 16, 64, 1, 4), device="gpu", seconds=2, default_seconds=3)
    tuning.record(path, "depthwise", first, "banded", (32, 32, 8, 8), device="gpu", seconds=1, default_seconds=3)
    table = tuning.load(path)
    assert len(table) == 2
    tuning.use(path)
    assert tuning.lookup("depthwise", **first)["kernel"] == "banded"
    assert tuning.lookup("depthwise", **second)["tiles"] == [1, 16, 64, 1, 4]
    assert tuning.lookup("depthwise", **dict(first, width=14)) is None  # an unnamed shape: the default


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{not json", "not readable JSON"),
    (json.dumps({"entries": []}), "not an effnet tuning file"),
    (json.dumps({"format": 1, "entries": [{"op": "conv", "key": {}}]}), "unknown op 'conv'"),
    (json.dumps({"format": 1, "entries": [{"op": "pointwise", "key": {"in_channels": 8}}]}), "lacks out_channels"),
    (json.dumps({"format": 1, "entries": [{"op": "depthwise", "key": dict(kernel_size=3, stride=1, channels=8,
                                                                           height=8, width=8),
                                           "kernel": "tiled", "tiles": [8, 8, 32]}]}),
     "tiles must be 5 or 6 whole numbers"),
    (json.dumps({"format": 1, "entries": [{"op": "depthwise", "key": dict(kernel_size=3, stride=2, channels=8,
                                                                           height=8, width=8),
                                           "kernel": "tiled", "tiles": [8, 8, 32, 1, 4, 1]}]}),
     "warmed depthwise taps .* stride 1 only"),
    (json.dumps({"format": 1, "entries": [{"op": "bn_depthwise", "key": dict(kernel_size=3, stride=2, channels=8,
                                                                              height=8, width=8),
                                           "kernel": "tiled", "tiles": [8, 8, 32, 4, 1]}]}),
     "warmed depthwise taps .* stride 1 only"),
    (json.dumps({"format": 1, "entries": [{"op": "bn_depthwise_input_grad",
                                           "key": dict(kernel_size=5, stride=2, channels=8, height=8, width=8),
                                           "kernel": "tiled", "tiles": [1, 16, 32, 4, 1]}]}),
     "warmed depthwise taps .* stride 1 only"),
    (json.dumps({"format": 1, "entries": [{"op": "depthwise", "key": dict(kernel_size=3, stride=1, channels=8,
                                                                           height=8, width=8),
                                           "kernel": "rolling", "tiles": [8, 16, 4, 4]}]}), "'kernel' in"),
    (json.dumps({"format": 1, "entries": [{"op": "depthwise", "key": dict(kernel_size=3, stride=2, channels=8,
                                                                           height=8, width=8),
                                           "kernel": "banded", "tiles": [16, 32, 8, 8]}]}), "16 x the stride"),
    (json.dumps({"format": 1, "entries": [{"op": "depthwise", "key": dict(kernel_size=3, stride=1, channels=8,
                                                                           height=8, width=8),
                                           "kernel": "banded", "tiles": [24, 32, 8, 8]}]}), "a power of two"),
    (json.dumps({"format": 1, "entries": [{"op": "pointwise", "key": dict(in_channels=24, out_channels=24, height=7,
                                                                           width=7, gated=True, residual=True),
                                           "kernel": "streaming", "tiles": [64, 32, 4, 3, 2]}]}),
     "at most one image's pixels, got 64 rows"),
    (json.dumps({"format": 1, "entries": [{"op": "excitation", "key": dict(batch=256, channels=1152, reduced=48),
                                           "kernel": "split", "tiles": [48]}]}),
     "chunks of a multiple of 32 channels, got 48"),
    (json.dumps({"format": 1, "entries": [{"op": "bn_pointwise_weight_grad",
                                           "key": dict(in_channels=16, out_channels=96, height=8, width=8,
                                                       normalized=False),
                                           "kernel": "tiled", "tiles": [32, 64, 64, 4, 3, 0]}]}),
     "programs per multiprocessor .* at least 1, got 0"),
])
def test_bad_tuning_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "tuning.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(tuning.TuningError, match=message):
        tuning.use(path)


def test_a_file_measured_on_another_gpu_is_taken_with_a_warning(tmp_path, monkeypatch):
    """No GPU here, so CUDA's answers are stood in for: the file's device against the machine's."""
    path = tmp_path / "t.json"
    key = dict(kernel_size=3, stride=1, channels=32, height=112, width=112)
    tuning.record(path, "depthwise", key, "tiled", (4, 16, 32, 1, 4), device="NVIDIA H100 80GB HBM3", seconds=1,
                  default_seconds=2)
    assert tuning.other_gpu(path) is None  # no GPU: the file's choices are never used on CPU anyway
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-40GB")
    with pytest.warns(UserWarning, match=r"t.json was measured on another GPU \(1 on NVIDIA H100 80GB HBM3\), "
                                         "this machine has NVIDIA A100"):
        tuning.use(path)
    assert tuning.lookup("depthwise", **key)["tiles"] == [4, 16, 32, 1, 4]  # taken all the same
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert tuning.other_gpu(path) is None


def test_each_entry_names_the_gpu_that_measured_it(tmp_path, monkeypatch):
    """A sweep on another card adds its winners to a file another card began (run 8: an H200 sweep went on from
    run 7's H100 file, which kept naming the H100 alone): each entry keeps its own device, and the warning
    counts the entries measured elsewhere."""
    path = tmp_path / "t.json"
    keys = [dict(kernel_size=k, stride=1, channels=32, height=112, width=112) for k in (3, 5)]
    tuning.record(path, "depthwise", keys[0], "tiled", (4, 16, 32, 1, 4), device="NVIDIA H100 80GB HBM3",
                  seconds=1, default_seconds=2)
    tuning.record(path, "depthwise", keys[1], "tiled", (8, 8, 32, 1, 4), device="NVIDIA H200", seconds=1,
                  default_seconds=2)
    document = json.loads(path.read_text())
    assert tuning.devices(document) == ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert tuning.other_gpu(path) == (
        f"tuning file {path} has 1 of 2 entries measured on another GPU (1 on NVIDIA H100 80GB HBM3), this machine "
        "has NVIDIA H200: its choices compute the same function, but may be slower here than the defaults; run the "
        "sweeps here for a file of its own")
    del document["entries"][1]["device"]  # an older file: its entries take the file's device
    path.write_text(json.dumps(document))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert tuning.other_gpu(path) is None


def test_the_files_shipped_per_card_are_valid_and_found_by_the_cards_name():
    """Each file under effnet/fast/tuned/ loads (every entry's kernel and tiles checked as a user's file is) and
    is the one `shipped_file` gives for the card it names."""
    shipped = sorted(tuning.SHIPPED.glob("*.json"))
    assert [path.name for path in shipped] == ["NVIDIA_H200.json"]
    for path in shipped:
        document = json.loads(path.read_text())
        assert len(tuning.load(path)) == len(document["entries"]) > 0
        assert tuning.shipped_file(document["device"]) == path
    assert tuning.shipped_file("NVIDIA H200") == tuning.SHIPPED / "NVIDIA_H200.json"
    assert tuning.shipped_file("NVIDIA H100 80GB HBM3") is None  # no file: the defaults
    assert tuning.shipped_file("../NVIDIA H200") is None  # a name is never a path


def test_a_gpu_with_a_shipped_file_takes_it_unless_told_otherwise(monkeypatch, tmp_path):
    """No GPU here, so CUDA's answers are stood in for. On an H200 with nothing named the fast paths take the
    shipped file, without the other-card warning its seven H100 entries would raise in a user's file (the file's
    goal rows ran with it whole on the H200); EFFNET_TUNING=none, use(None) or a named file win over it."""
    import warnings

    key = dict(in_channels=3, out_channels=32, kernel_size=3, stride=2, height=224, width=224)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.delenv(tuning.ENV, raising=False)
    monkeypatch.setattr(tuning, "_active", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuning.lookup("stem", **key)["kernel"] == "dot"  # run 9: 2.3x the direct kernel on B0's stem
    assert tuning.source() == str(tuning.SHIPPED / "NVIDIA_H200.json")
    monkeypatch.setenv(tuning.ENV, "none")
    monkeypatch.setattr(tuning, "_active", None)
    assert tuning.lookup("stem", **key) is None and tuning.source() is None
    monkeypatch.delenv(tuning.ENV)
    tuning.use(None)
    assert tuning.lookup("stem", **key) is None
    path = tmp_path / "mine.json"
    tuning.record(path, "stem", key, "direct", [], device="NVIDIA H200", seconds=1, default_seconds=2)
    monkeypatch.setenv(tuning.ENV, str(path))
    monkeypatch.setattr(tuning, "_active", None)
    assert tuning.lookup("stem", **key)["kernel"] == "direct" and tuning.source() == str(path)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-40GB")
    monkeypatch.delenv(tuning.ENV)
    monkeypatch.setattr(tuning, "_active", None)
    assert tuning.lookup("stem", **key) is None  # no file shipped for this card
