"""The GPU lease's kernel sweeps, run on CPU under Triton's interpreter on one small layer each: every
variant is checked against PyTorch, the JSON is written, and the winners go into a tuning file the fast
paths accept. A sweep that broke (a renamed kernel argument, say) would otherwise first fail on a GPU
lease, where minutes are scarce."""
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

from effnet.fast import tuning
from kernel_helpers import needs_triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# (script, its options for one layer shape and one configuration of each kernel, the tuning ops it may write)
SWEEPS = [
    ("depthwise_sweep", ["--configs", "1", "--banded-configs", "1", "--sliding-configs", "1"], {"depthwise"}),
    ("pointwise_sweep", ["--configs", "1", "--stream-configs", "1"], {"pointwise"}),
    ("depthwise_train_sweep", ["--configs", "1"], {"depthwise_input_grad", "depthwise_weight_grad"}),
    # layer 2 is a projection: the input's batch norm, SiLU and gate applied as it loads
    ("bn_pointwise_sweep", ["--configs", "2", "--layers", "2"],
     {"bn_pointwise", "bn_pointwise_input_grad", "bn_pointwise_weight_grad"}),
    # layer 1 an expansion (layer 0 a projection): its passes through the library's matrix products too
    ("bn_pointwise_sweep", ["--configs", "1", "--wave-configs", "0", "--layers", "1"],
     {"bn_pointwise", "bn_pointwise_input_grad", "bn_pointwise_weight_grad"}),
    ("bn_depthwise_sweep", ["--configs", "2"], {"bn_depthwise", "bn_depthwise_input_grad", "bn_depthwise_weight_grad"}),
    ("stem_sweep", ["--configs", "2"], {"stem"}),  # the stem's direct kernel and two tile sets of its dot form
    ("excitation_sweep", ["--configs", "2"], {"excitation"}),  # B0's first SE: one launch, two chunks of the split
]


@pytest.fixture(autouse=True)
def _no_tuning_left_behind():
    yield
    tuning.use(None)


@needs_triton
@pytest.mark.parametrize("script, options, ops", SWEEPS,
                         ids=[s[0] + ("_expansion" if s[1][-1] == "1" else "") for s in SWEEPS])
def test_sweep_checks_every_variant_and_writes_a_tuning_file_the_fast_paths_take(tmp_path, monkeypatch, script,
                                                                                  options, ops):
    sweep = importlib.import_module(script)
    path = tmp_path / "tuning.json"
    monkeypatch.setattr(sys, "argv", [script, "--device", "cpu", "--batch", "1", "--size", "16", "--layers", "0",
                                      "--out", str(tmp_path), "--tuning", str(path), *options])
    assert sweep.main() == 0  # 1 would mean a variant's result strayed from PyTorch's
    rows = json.loads((tmp_path / f"{script}.json").read_text())["rows"]
    assert len(rows) == 1 and len(rows[0]["errors"]) >= 3  # the default and at least two variants, all checked
    if script == "bn_depthwise_sweep":  # each pass through cuDNN too (B0's first layer: symmetric padding)
        assert {"fwd cudnn", "dx cudnn", "dw cudnn"} <= set(rows[0]["errors"]) and "dx cudnn" in rows[0][
            "pass_seconds"]["bn_depthwise_input_grad"]
        assert {"fwd banded", "dw banded", "dx banded"} <= set(rows[0]["errors"])  # and the banded kernels'
        assert {"fwd sliding", "dx sliding", "fwd sliding ahead", "dx sliding ahead"} <= set(rows[0]["errors"])
    if script == "depthwise_sweep":  # B0's first layer is stride 1: the banded kernel, cuDNN's conv, the sliding one
        assert any(name.startswith("banded") for name in rows[0]["errors"]) and "cudnn" in rows[0]["errors"]
        assert any(name.startswith("sliding") for name in rows[0]["errors"])
    if script == "bn_pointwise_sweep":  # each layer's passes through the library's products (layer 0 a projection)
        assert "blas" in rows[0]["errors"] and "blas" in rows[0]["pass_seconds"]["bn_pointwise_weight_grad"]
        assert ("blas backward" in rows[0]["seconds"]) and rows[0]["role"] == ("expand" if options[-1] == "1"
                                                                                else "project")
    if script == "pointwise_sweep":  # the conv as one library product too
        assert "cublas" in rows[0]["errors"]
    if path.exists():  # a variant beat the default by 3% (under the interpreter the default's tiles are slow)
        table = tuning.load(path)
        assert {key[0] for key in table} <= ops
        tuning.use(path)


@needs_triton
def test_the_depthwise_sweep_times_the_triton_kernels_where_cudnn_is_the_default(tmp_path, monkeypatch):
    """On a GPU, passes default to cuDNN's form (`bn_depthwise.default_cudnn`): there the sweep's "default" is that
    form and the Triton kernels' default tiles become a choice of their own, checked and timed ("fwd/dx/dw triton";
    here every pass of B0's first layer defaults to cuDNN, which the real rule does not say of a 3 x 3 layer, so
    that all three run)."""
    from effnet.fast import bn_depthwise as bnd

    sweep = importlib.import_module("bn_depthwise_sweep")
    monkeypatch.setattr(bnd, "_by_default", lambda op, kernel_size, stride, height: True)
    monkeypatch.setattr(sys, "argv", ["bn_depthwise_sweep", "--device", "cpu", "--batch", "1", "--size", "16",
                                      "--layers", "0", "--configs", "1", "--out", str(tmp_path)])
    assert sweep.main() == 0
    row = json.loads((tmp_path / "bn_depthwise_sweep.json").read_text())["rows"][0]
    for op, prefix in (("bn_depthwise", "fwd"), ("bn_depthwise_input_grad", "dx"), ("bn_depthwise_weight_grad", "dw")):
        times = row["pass_seconds"][op]
        assert f"{prefix} triton" in row["errors"] and f"{prefix} triton" in times
        assert times["default"] == times[f"{prefix} cudnn"]


def test_a_sweep_the_default_wins_drops_the_layers_older_choice(tmp_path):
    """A tuning file carried from an earlier lease names a layer; when this sweep finds no variant beating the
    default (which may have changed since), the old choice goes, so the model takes the default measured now."""
    from sweep_common import AGAIN, promote

    path = tmp_path / "tuning.json"
    key = dict(in_channels=32, out_channels=192, height=95, width=95, gated=False, residual=False)
    other = dict(key, in_channels=24)
    for shape in (key, other):
        tuning.record(path, "pointwise", shape, "tiled", (128, 64, 64, 8, 3), device="gpu", seconds=1,
                      default_seconds=2, gate_weights=False)
    choices = {"(128, 64, 64, 8, 3)": ("tiled", (128, 64, 64, 8, 3), {"gate_weights": False})}
    errors = {"default": 0.0, "(128, 64, 64, 8, 3)": 0.0}
    times = {"default": 1.0, AGAIN: 1.0, "(128, 64, 64, 8, 3)": 1.01}
    assert promote(path, "pointwise", key, choices, times, errors, 1e-4, torch.device("cpu")) is None
    table = tuning.load(path)
    assert ("pointwise", *key.values()) not in table and ("pointwise", *other.values()) in table
    times["(128, 64, 64, 8, 3)"] = 0.5  # now the variant wins: recorded again
    assert promote(path, "pointwise", key, choices, times, errors, 1e-4, torch.device("cpu")) == "(128, 64, 64, 8, 3)"
    assert tuning.load(path)[("pointwise", *key.values())]["seconds"] == 0.5


@needs_triton
def test_a_variant_the_card_cannot_launch_is_skipped_and_the_rest_still_run():
    """A tile set that asks for more shared memory than the card has (Triton raises OutOfResources at its first
    launch) is named and skipped, not the end of the lease's sweep; the default must run."""
    from triton.runtime.errors import OutOfResources

    from effnet.bench.measure import Timer
    from sweep_common import outcome, time_variants

    def too_big():
        raise OutOfResources(300_000, 232_448, "shared memory")

    timer = Timer(torch.device("cpu"), 0, 1, 1)
    variants = {"default": lambda: torch.ones(3), "(256, 64)": too_big, "(64, 64)": lambda: torch.full((3,), 2.0)}
    errors, times, skipped = time_variants(variants, lambda y: float((y - 1).abs().max()), timer)
    assert skipped == ["(256, 64)"] and errors == {"default": 0.0, "(64, 64)": 1.0} and set(times) == set(errors)
    assert outcome(skipped, "(64, 64)") == "; out of resources: (256, 64); tuned: (64, 64)"
    assert outcome([], {"bn_depthwise": None, "bn_depthwise_input_grad": "dx sliding"}) == (
        "; tuned bn_depthwise_input_grad: dx sliding")
    with pytest.raises(OutOfResources):
        time_variants({"default": too_big}, float, timer)


@needs_triton
@pytest.mark.parametrize("script, op, key, entry", [
    ("depthwise_sweep", "depthwise", dict(kernel_size=3, stride=1, channels=32, height=8, width=8),
     ("tiled", (2, 4, 32, 1, 4), {})),
    ("pointwise_sweep", "pointwise", dict(in_channels=16, out_channels=96, height=8, width=8, gated=False,
                                          residual=False), ("tiled", (16, 32, 16, 4, 1), {"gate_weights": False})),
], ids=["depthwise_sweep", "pointwise_sweep"])
def test_a_narrow_sweep_times_the_tuning_files_own_choice_again(tmp_path, monkeypatch, script, op, key, entry):
    """The lease's inference call sweeps few tiles per layer; a choice an earlier, wider sweep recorded for the layer
    is timed and checked beside them ("recorded ..."), not dropped for not being among them."""
    sweep = importlib.import_module(script)
    path = tmp_path / "tuning.json"
    kernel, tiles, extra = entry
    tuning.record(path, op, key, kernel, tiles, device="cpu", seconds=1e-9, default_seconds=1.0, **extra)
    monkeypatch.setattr(sys, "argv", [script, "--device", "cpu", "--batch", "1", "--size", "16", "--layers", "0",
                                      "--configs", "0", "--out", str(tmp_path), "--tuning", str(path),
                                      *(["--banded-configs", "0", "--sliding-configs", "0"]
                                        if script == "depthwise_sweep" else
                                        ["--stream-configs", "0", "--no-cublas"])])
    assert sweep.main() == 0
    row, = json.loads((tmp_path / f"{script}.json").read_text())["rows"]
    assert f"recorded {kernel} {tiles}" in row["errors"] and f"recorded {kernel} {tiles}" in row["seconds"]


def test_a_sweep_keeps_a_recorded_choice_it_did_not_time_unless_beaten(tmp_path):
    """The training sweeps time their own tile sets only: a layer's recorded choice from another sweep (say the
    cuDNN form) stays unless a timed variant beats the seconds it was recorded at, or the default now does."""
    from sweep_common import AGAIN, promote

    path = tmp_path / "tuning.json"
    key = dict(kernel_size=3, stride=1, channels=32, height=8, width=8)
    tuning.record(path, "bn_depthwise", key, "cudnn", (), device="gpu", seconds=0.5, default_seconds=1.0)
    choices = {"#0": ("tiled", (8, 8, 32, 4), {})}
    errors = {"default": 0.0, "#0": 0.0}
    cpu = torch.device("cpu")
    times = {"default": 1.0, AGAIN: 1.0, "#0": 0.8}  # beats the default, not the recorded choice
    assert promote(path, "bn_depthwise", key, choices, times, errors, 1e-4, cpu) is None
    assert tuning.load(path)[("bn_depthwise", *key.values())]["kernel"] == "cudnn"
    times["#0"] = 0.4  # beats both: it takes the place
    assert promote(path, "bn_depthwise", key, choices, times, errors, 1e-4, cpu) == "#0"
    assert tuning.load(path)[("bn_depthwise", *key.values())]["kernel"] == "tiled"
    tuning.record(path, "bn_depthwise", key, "cudnn", (), device="gpu", seconds=0.5, default_seconds=1.0)
    times = {"default": 0.3, AGAIN: 0.3, "#0": 0.8}  # the default now beats the recorded seconds: the entry goes
    assert promote(path, "bn_depthwise", key, choices, times, errors, 1e-4, cpu) is None
    assert ("bn_depthwise", *key.values()) not in tuning.load(path)
    # A recorded choice this sweep timed and found wrong goes too, however fast it was recorded.
    tuning.record(path, "bn_depthwise", key, "cudnn", (), device="gpu", seconds=0.5, default_seconds=1.0)
    choices["cudnn"], errors["cudnn"] = ("cudnn", (), {}), 1.0
    times = {"default": 1.0, AGAIN: 1.0, "#0": 1.0, "cudnn": 0.4}
    assert promote(path, "bn_depthwise", key, choices, times, errors, 1e-4, cpu) is None
    assert ("bn_depthwise", *key.values()) not in tuning.load(path)
