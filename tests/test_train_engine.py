"""The training loop reads its loss back from the device only every `read_every` steps (a CUDA read waits for
the GPU, so a read each step serialises host and GPU): the same training, the same numbers where it reads, and
a non-finite loss still stops the run, naming its step, before anything more is logged or saved. `evaluate`
likewise sums on the device and reads once."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from effnet.errors import EffnetError
from effnet.train.checkpoint import load_checkpoint
from effnet.train.engine import NonFiniteLossError, Precision, evaluate, train_one_epoch

SIZES = [4, 4, 3, 4, 2, 4, 4, 1]  # images per batch: the mean must weight by images


def _batches(poison: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    batches = []
    for index, size in enumerate(SIZES):
        images = torch.randn(size, 3, 2, 2, generator=generator)
        if index == poison:
            images[0, 0, 0, 0] = float("nan")
        batches.append((images, torch.randint(0, 5, (size,), generator=generator)))
    return batches


def _train(read_every: int, grad_accum_steps: int = 1, poison: int | None = None, seen: list | None = None):
    """A small network trained one epoch over `_batches`; `seen` collects each `after_step` call."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.SiLU(), nn.Linear(16, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = [] if seen is None else seen
    result = train_one_epoch(model, _batches(poison), optimizer, nn.CrossEntropyLoss(), device=torch.device("cpu"),
                             precision=Precision(None, None), learning_rate=lambda step: 0.1, first_step=0,
                             grad_accum_steps=grad_accum_steps, read_every=read_every,
                             after_step=lambda step, stats: seen.append((step, dict(stats))))
    return model, seen, result


def test_reads_every_few_steps_give_the_same_training_and_the_window_means():
    every_model, every_steps, every_result = _train(read_every=1)
    model, steps, result = _train(read_every=3)
    assert [step for step, _ in steps] == list(range(1, 9))
    assert [step for step, stats in steps if "loss" in stats] == [3, 6]
    assert all(set(stats) == {"lr"} for step, stats in steps if step % 3)
    per_step = {step: stats["loss"] for step, stats in every_steps}
    for step, stats in steps:
        if "loss" in stats:
            window = range(step - 2, step + 1)
            expected = sum(per_step[s] * SIZES[s - 1] for s in window) / sum(SIZES[s - 1] for s in window)
            assert stats["loss"] == pytest.approx(expected, rel=1e-6)
            assert stats["images_per_second"] > 0
    assert result["images"] == every_result["images"] == sum(SIZES)
    assert result["loss"] == pytest.approx(every_result["loss"], rel=1e-6)
    assert result["step"] == 8
    for reading, each in zip(model.parameters(), every_model.parameters()):
        assert torch.equal(reading, each)


def test_the_micro_batches_past_the_last_step_count_in_the_epoch_loss():
    model, steps, result = _train(read_every=2, grad_accum_steps=3)  # 8 batches: 2 steps and 2 left over
    assert [step for step, _ in steps] == [1, 2] and "loss" in steps[1][1]
    assert result["images"] == sum(SIZES) and result["step"] == 2


def test_a_non_finite_loss_stops_at_the_next_read_naming_its_step():
    seen = []
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5; lower the learning rate"):
        _train(read_every=3, poison=4, seen=seen)
    assert [step for step, _ in seen] == [1, 2, 3, 4, 5]  # step 6's read raised before its after_step
    assert math.isfinite(seen[2][1]["loss"])  # step 3 read finite losses
    assert issubclass(NonFiniteLossError, EffnetError)


def test_read_every_below_one_is_refused():
    with pytest.raises(ValueError, match="read_every must be at least 1"):
        _train(read_every=0)


def test_a_diverging_run_ends_in_one_line_and_its_checkpoints_hold_finite_weights(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "effnet", "train", "--output", str(out), "--phi", "-3",
                             "--image-size", "16", "--workers", "0", "--epochs", "1", "--val-fraction", "0.7",
                             "--seed", "5", "--lr", "1e30", "--checkpoint-every", "1", "--log-every", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert error[0].startswith("effnet train: error: loss is ") and "at step " in error[0]
    failed_at = int(error[0].split("at step ")[1].split(";")[0])
    saved = sorted((out / "checkpoints").glob("step-*.pt"))
    assert saved, "the steps before the failure were checkpointed"
    for path in saved:
        checkpoint = load_checkpoint(path)
        assert checkpoint["state"]["step"] < failed_at
        assert all(torch.isfinite(value).all() for value in checkpoint["model"].values() if value.is_floating_point())


def test_the_loop_benchmark_runs_on_cpu(tmp_path):
    """`benchmarks/train_loop.py` as its docstring shows it for a CPU (the GPU figures come from a lease)."""
    out = tmp_path / "loop.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_loop.py"
    result = subprocess.run([sys.executable, str(script), "--device", "cpu", "--size", "16", "--batch", "2",
                             "--steps", "3", "--repeats", "2", "--every", "2", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "loss read every  2 steps" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["amp"] == "none" and figures["device"] == "CPU"
    assert all(len(rates) == 2 and min(rates) > 0 for rates in figures["images_per_second"].values())
    assert figures["ratio"] > 0


def test_evaluate_counts_as_a_plain_loop_over_the_images_does():
    """`evaluate` keeps its sums on the device until the end; its figures are those of a loop image by image."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    batches = _batches()
    for _, targets in batches:
        targets.remainder_(7)
    report = evaluate(model, batches, 7, device=torch.device("cpu"))
    images = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model(images)
    top1 = top5 = 0
    confusion = [[0] * 7 for _ in range(7)]
    for row, target in zip(logits, targets.tolist()):
        order = row.argsort(descending=True).tolist()
        top1 += order[0] == target
        top5 += target in order[:5]
        confusion[target][order[0]] += 1
    count = len(targets)
    assert report["count"] == count == sum(SIZES)
    assert report["top1"] == pytest.approx(100 * top1 / count) and report["top5"] == pytest.approx(100 * top5 / count)
    assert report["loss"] == pytest.approx(nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
    assert report["confusion"] == confusion
    assert report["per_class_accuracy"] == pytest.approx(
        [100 * confusion[c][c] / max(sum(confusion[c]), 1) for c in range(7)])
