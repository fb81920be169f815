"""`effnet train`'s switches to the fast training paths (`effnet.fast`): the memory savers and the fused
training blocks, each applied to the model a run trains, and their misuses refused in one line."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from effnet.cli import main
from effnet.fast import memory
from effnet.fast.fused_training import FusedTrainingMBConv
from effnet.train import resolve_config
from effnet.train.config import ConfigError
from kernel_helpers import needs_triton

TINY = ["--phi", "-3", "--image-size", "16", "--workers", "0", "--epochs", "1", "--val-fraction", "0.7",
        "--deterministic", "--seed", "5"]


def test_stage_checkpointing_trains_to_the_bit_like_the_plain_model(tmp_path, monkeypatch):
    """The run applies the saver to the model it trains (the real function, recorded on the way through), and
    recomputing each stage in the backward changes nothing: the same weights and statistics, bit for bit."""
    applied = []

    def recording(model, mode="activations"):
        applied.append((type(model).__name__, mode))
        return enable(model, mode)

    enable = memory.enable_memory_saving
    monkeypatch.setattr(memory, "enable_memory_saving", recording)
    assert main(["train", "--output", str(tmp_path / "plain"), *TINY, "--json"]) == 0
    assert applied == []
    assert main(["train", "--output", str(tmp_path / "saver"), *TINY, "--memory-saver", "stages", "--json"]) == 0
    assert applied == [("EfficientNet", "stages")]
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    saver = load_file(tmp_path / "saver" / "model.safetensors")
    assert plain.keys() == saver.keys()
    for key in plain:
        assert torch.equal(plain[key], saver[key]), key


@needs_triton
def test_fused_training_switches_the_blocks_of_the_model_a_run_trains():
    from effnet.train import build
    from effnet.train.run import _speed_paths

    config = resolve_config({"output": "unused", "phi": -3, "fused_training": True, "channels_last": True})
    model = build.build_model(config, num_classes=10)
    _speed_paths(model, config, torch.device("cpu"))  # the kernels run here under TRITON_INTERPRET=1
    blocks = [m for m in model.modules() if type(m).__name__.endswith("MBConv")]
    assert blocks and all(isinstance(block, FusedTrainingMBConv) for block in blocks)


@pytest.mark.parametrize("options, message", [
    ({"memory_saver": "everything"}, "memory_saver must be one of none, activations, stages, both"),
    ({"fused_training": True}, "add --channels-last"),
    ({"fused_training": True, "channels_last": True, "memory_saver": "stages"}, "does not combine"),
    ({"fused_training": True, "channels_last": True, "sync_bn": True}, "cannot run with sync_bn"),
    ({"memory_saver": "activations", "sync_bn": True}, "replaces the batch norms"),
])
def test_misused_switches_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config({"output": "unused", **options})


def test_fused_training_without_a_gpu_is_one_clear_error(tmp_path):
    """On a CPU without Triton's interpreter the kernels cannot run: one line saying so, no traceback."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(tmp_path / "run"), *TINY,
                             "--fused-training", "--channels-last"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "fused_training runs Triton kernels: it needs a CUDA device" in result.stderr
    assert "Traceback" not in result.stderr
