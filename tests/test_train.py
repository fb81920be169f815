"""Training end to end on the CPU: learning, exact resume after SIGKILL, torchrun, bad files, safety."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import effnet
from effnet.cli import main
from effnet.errors import WeightsError
from effnet.train.checkpoint import load_checkpoint

# A tiny, fast network: EfficientNet-B0 compound-scaled down by phi = -3, trained on 16x16 images.
TINY = ["--phi", "-3", "--image-size", "16", "--workers", "0"]


def run_cli(*argv: str) -> None:
    assert main(["train", *argv, "--json"]) == 0


def train_process(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "effnet", "train", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_run_learns_and_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    """One uninterrupted run learns (and writes every artefact); a second, killed mid-epoch and resumed,
    ends with the same weights to the bit. (One test: the uninterrupted run is the reference for both.)"""
    common = [*TINY, "--epochs", "2", "--deterministic", "--checkpoint-every", "4", "--seed", "3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = train_process("--output", str(straight), *common)  # side by side: one thread each
    process = train_process("--output", str(killed), *common)
    checkpoints = killed / "checkpoints"
    deadline = time.time() + 300
    while not any(p.name == "step-000000008.pt" for p in checkpoints.glob("step-*.pt")):
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists()
    state = load_checkpoint(max(checkpoints.glob("step-*.pt")))["state"]
    assert state["epoch"] == 0 and 0 < state["batches_done"]  # killed mid-epoch
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()

    resumed = train_process("--output", str(killed), *common, "--resume", "auto")
    _assert_learned_with_every_artefact(straight)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    expected, actual = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    ema_expected = load_file(straight / "model_ema.safetensors")
    ema_actual = load_file(killed / "model_ema.safetensors")
    assert all(torch.equal(ema_expected[key], ema_actual[key]) for key in ema_expected)


def _assert_learned_with_every_artefact(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    # ten digit classes, 359 validation images: chance is 10% (+- 1.6%); where two epochs end depends on the CPU's
    # rounding (28.7% on an AVX-512 EPYC, over 30% on the machines before it)
    assert summary["top1"] > 20.0
    assert summary["epochs"] == 2 and summary["skipped_files"] == [] and summary["images_per_second"] > 0
    for name in ("summary.json", "model.safetensors", "model_ema.safetensors", "config.json", "metrics.csv",
                 "loss.png", "accuracy.png", "lr.png", "config.resolved.json"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    assert (out / "checkpoints" / "best.pt").is_file()
    config = json.loads((out / "config.json").read_text())
    model = effnet.create_model(str(out)).eval()
    assert model.class_names == config["class_names"] == [str(i) for i in range(10)] and model.num_classes == 10
    assert summary["macs_per_image"] == effnet.count_macs(model.spec, num_classes=10)  # torch's FLOP counter


def _updates(run: Path, start: dict) -> torch.Tensor:
    final = load_file(run / "model.safetensors")
    keys = [k for k in final if final[k].is_floating_point() and "running" not in k]
    return torch.cat([(final[k] - start[k]).flatten() for k in keys])


def test_torchrun_two_processes_match_one_process(tmp_path):
    common = [*TINY, "--epochs", "1", "--seed", "1", "--drop-rate", "0", "--drop-path-rate", "0",
              "--ema-decay", "0", "--deterministic", "--optimizer", "sgd", "--val-fraction", "0.8", "--sync-bn"]
    single, double, frozen = tmp_path / "single", tmp_path / "double", tmp_path / "frozen"
    runs = [train_process("--output", str(single), "--batch-size", "32", "--lr", "0.0001", *common),
            train_process("--output", str(frozen), "--batch-size", "32", "--lr", "0", *common)]  # side by side
    assert all(run.wait(timeout=600) == 0 for run in runs)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                "-m", "effnet", "train", "--output", str(double), "--batch-size", "16", "--lr", "0.0001", *common]
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((d / "summary.json").read_text()) for d in (single, double))
    assert one["steps"] == two["steps"] and one["train_images"] == two["train_images"]
    # Same samples, augmentations and (with --sync-bn) BN statistics per step: only summation order
    # differs (first-step gradients agree to ~2e-5), so the weight updates agree closely. Without
    # global BN statistics the updates are nearly unrelated at this size (cosine ~0.1).
    start = load_file(frozen / "model.safetensors")  # lr 0: the initial weights
    update_one, update_two = _updates(single, start), _updates(double, start)
    assert torch.nn.functional.cosine_similarity(update_one, update_two, dim=0) > 0.98
    assert (update_one - update_two).norm() / update_one.norm() < 0.2


def _write_bad_and_awkward_tree(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(12 if split == "train" else 4):
                shade = 40 if name == "a" else 200
                pixels = np.clip(rng.normal(shade, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    train_a = root / "train" / "a"
    Image.new("CMYK", (20, 20), (10, 20, 30, 0)).save(train_a / "cmyk.jpg")
    Image.new("I;16", (20, 20), 3000).save(train_a / "sixteen.png")
    Image.new("P", (20, 20), 3).save(train_a / "palette.png")
    Image.new("LA", (20, 20), (30, 128)).save(train_a / "gray_alpha.png")
    Image.new("RGBA", (20, 20), (30, 30, 30, 100)).save(train_a / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.new("RGB", (24, 20), (40, 40, 40)).save(train_a / "rotated.jpg", exif=exif)
    bad = {
        "empty.jpg": b"",
        "notes.jpg": b"this is not an image at all",
    }
    for name, content in bad.items():
        (train_a / name).write_bytes(content)
    good = (train_a / "0.png").read_bytes()
    (train_a / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (20000, 20000)).save(root / "train" / "b" / "bomb.png", optimize=False)
    return [str(train_a / n) for n in ("empty.jpg", "notes.jpg", "truncated.png")] + [
        str(root / "train" / "b" / "bomb.png")]


def test_bad_files_are_skipped_and_reported(tmp_path, capsys):
    data = tmp_path / "data"
    bad = _write_bad_and_awkward_tree(data)
    out = tmp_path / "run"
    assert main(["train", "--output", str(out), "--data", str(data), *TINY, "--epochs", "1", "--batch-size", "8",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["skipped_files"]) == sorted(bad)
    assert summary["train_images"] == 24 + 6  # the awkward-but-valid images are used
    assert json.loads((out / "summary.json").read_text())["skipped_files"] == summary["skipped_files"]


@pytest.mark.parametrize("argv, message", [
    (["--data", "/no/such/folder"], "neither a folder"),
    (["--batch-size", "5000"], "larger than the"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--recipe", "finetune"], "needs pretrained"),
    (["--amp", "fp8"], "amp must be"),
])
def test_mistakes_give_one_clear_line(tmp_path, argv, message):
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(tmp_path / "o"), *TINY,
                             *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option, value, message", [
    ("lr", -1, "lr must be >= 0, got -1"), ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("momentum", 1.0, "momentum must be in [0, 1)"), ("decay_rate", 0, "decay_rate must be in (0, 1]"),
    ("drop_path_rate", 1.5, "drop_path_rate must be in [0, 1)"), ("keep_last", 0, "keep_last must be at least 1"),
    ("clip_grad_norm", 0, "clip_grad_norm must be positive"), ("bn_momentum", 0, "bn_momentum must be in (0, 1]"),
])
def test_optimizer_and_schedule_mistakes_are_config_errors(tmp_path, capsys, option, value, message):
    """Caught before any setup: PyTorch's own checks (a negative lr, say) raised a traceback mid-setup."""
    assert main(["train", "--output", str(tmp_path / "o"), *TINY, f"--{option.replace('_', '-')}", str(value)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet train: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_resume_with_another_model_is_refused(tmp_path):
    out = tmp_path / "run"
    run_cli("--output", str(out), *TINY, "--epochs", "1", "--val-fraction", "0.9")  # a checkpoint, quickly
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(out), "--phi", "-2",
                             "--image-size", "16", "--epochs", "2", "--resume", "auto"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "cannot resume" in result.stderr


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker))}, path)
    with pytest.raises(WeightsError, match="refused"):
        load_checkpoint(path)
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(tmp_path / "o"), *TINY,
                             "--resume", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "refused" in result.stderr
    assert not marker.exists()


# bf16 and channels-last run apart: together, on CPU, one suite run in several gave a NaN loss at
# the second step (not reproduced alone; suspected in oneDNN's bf16 channels-last kernels).
@pytest.mark.parametrize("switches", [["--amp", "bf16"], ["--channels-last"]], ids=["bf16", "channels_last"])
def test_speed_switches_train_to_the_end(tmp_path, capsys, switches):
    out = tmp_path / "fast"
    assert main(["train", "--output", str(out), *TINY, "--epochs", "1", *switches,
                 "--grad-accum-steps", "2", "--clip-grad-norm", "1.0", "--mixup-alpha", "0.2", "--cutmix-alpha",
                 "1.0", "--val-fraction", "0.8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["steps"] == (359 // 32) // 2
    assert (out / "model.safetensors").is_file()
