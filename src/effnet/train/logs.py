"""What a user watches: per-epoch CSV, TensorBoard scalars, and PNG plots at the end."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

EPOCH_FIELDS = ("epoch", "step", "lr", "train_loss", "val_loss", "top1", "top5", "ema_top1", "ema_top5",
                "images_per_second", "seconds")


class RunLogger:
    """Writes `metrics.csv` and TensorBoard events under the run folder (rank 0 only)."""

    def __init__(self, output: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.output, self.enabled = output, enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(output / "tensorboard"))

    def step(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, step)

    def epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.output / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for name in ("train_loss", "val_loss", "top1", "top5", "ema_top1", "ema_top5", "lr"):
                if row.get(name) is not None:
                    self.writer.add_scalar(f"epoch/{name}", row[name], row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as stream:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(stream)]


def plot_history(history: Sequence[dict[str, float]], output: Path) -> list[Path]:
    """loss.png, accuracy.png and lr.png against epochs; nothing when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    if not history:
        return []
    epochs = [row["epoch"] for row in history]
    panels = {
        "loss.png": ("loss", ("train_loss", "val_loss")),
        "accuracy.png": ("top-1 accuracy (%)", ("top1", "ema_top1")),
        "lr.png": ("learning rate", ("lr",)),
    }
    written = []
    for name, (label, series) in panels.items():
        figure, axes = plt.subplots(figsize=(6, 4))
        for key in series:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                axes.plot(epochs, [v if v is not None else float("nan") for v in values], marker="o", label=key)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(output / name, dpi=100)
        plt.close(figure)
        written.append(output / name)
    return written
