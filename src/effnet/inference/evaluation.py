"""`evaluate_weights`: top-1, top-5, loss, per-class accuracy and confusion of saved weights on a data set.

Which images are evaluated:

- a named data set (`builtin`, `fashion-mnist`, `cifar10`, `cifar100`): its val split (the test
  split for Fashion-MNIST and CIFAR), or its train split with `split="train"`;
- a folder with `train/` and `val/`: that split; only the chosen split's files are read, so
  evaluating an ImageNet-style val folder does not scan the training images;
- a folder with `train/` only: the seeded val fraction of it, as training held it out;
- a plain `DIR/<class>/` tree: all of it (`split` is reported as "all"), on the view that a tree
  handed to evaluation is held-out data. (Evaluating the tree a model was trained on this way
  includes its training images.)

Seeded splits reuse the `seed` and `val_fraction` stored with the weights by `effnet train`, so
`effnet eval` on the training data reproduces the run's own validation numbers. Images get the
preprocessing the weights were validated with (`trained_data_config`); tiny-image data sets are
never centre-cropped, as in training.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from effnet.data import (
    DATASET_NAMES,
    DataError,
    ImageFolderDataset,
    load_dataset,
    load_image_folder,
    make_eval_transform,
    make_loader,
)
from effnet.data.tree import find_layout, list_class_folders
from effnet.inference.predict import (
    InferenceError,
    resolve_device,
    train_config_of,
    trained_data_config,
    weights_path,
)
from effnet.fast import BACKENDS
from effnet.spec.data import DataConfig

SPLITS = ("val", "train")
WHOLE_TREE = "all"
DEFAULT_BATCH_SIZE = 64
SHOW_NAMES = 8  # class names listed in a mismatch message
LABELLED_AXES_MAX = 50  # confusion.png labels its axes up to this many classes
ANNOTATED_CELLS_MAX = 25  # ... and writes the count in every cell up to this many


class ClassMismatchError(InferenceError):
    """The data's classes are not the weights' classes in the same order: indices would not agree."""


def _short(names: Sequence[str]) -> str:
    shown = ", ".join(map(str, names[:SHOW_NAMES]))
    return f"[{shown}{', ...' if len(names) > SHOW_NAMES else ''}] ({len(names)})"


def check_classes(weight_names: Sequence[str] | None, num_outputs: int, data_classes: Sequence[str],
                  data_name: str) -> None:
    """Raise ClassMismatchError unless the data's class list is the weights' (or, unnamed, as long)."""
    data_classes = list(data_classes)
    if weight_names is None:
        if len(data_classes) != num_outputs:
            raise ClassMismatchError(f"the weights have {num_outputs} outputs but {data_name} has "
                                     f"{len(data_classes)} classes {_short(data_classes)}")
        return
    weight_names = list(weight_names)
    if weight_names == data_classes:
        return
    if sorted(weight_names) == sorted(data_classes):
        raise ClassMismatchError(f"{data_name} has the weights' classes in another order: data "
                                 f"{_short(data_classes)}, weights {_short(weight_names)}")
    missing = [name for name in weight_names if name not in data_classes]
    extra = [name for name in data_classes if name not in weight_names]
    raise ClassMismatchError(f"the classes of {data_name} do not match the weights': weights {_short(weight_names)}, "
                             f"data {_short(data_classes)}; not in the data: {_short(missing)}, "
                             f"not in the weights: {_short(extra)}")


def _eval_data_config(data_config: DataConfig, data: str, image_size: int | None) -> DataConfig:
    from effnet.train.build import SMALL_IMAGE_DATA  # the training side's rule, not a copy of it

    if image_size is not None:
        if image_size < 8:
            raise InferenceError(f"image_size must be at least 8, got {image_size}")
        data_config = replace(data_config, input_size=(data_config.input_size[0], image_size, image_size))
    if data in SMALL_IMAGE_DATA:
        data_config = replace(data_config, crop_pct=1.0)
    return data_config


def _folder_split(root: Path, split: str, transform: Any, *, classes_of_weights: Sequence[str] | None,
                  num_outputs: int, seed: int, val_fraction: float | None,
                  workers: int) -> tuple[Dataset, list[str], str]:
    """The evaluation set of an image-folder tree; classes are checked before any file is read."""
    layout = find_layout(root)
    if not layout.has_splits:
        classes = list_class_folders(root)
        check_classes(classes_of_weights, num_outputs, classes, str(root))
        return ImageFolderDataset(root, transform=transform, workers=workers), classes, WHOLE_TREE
    classes = list_class_folders(layout.splits["train"])
    check_classes(classes_of_weights, num_outputs, classes, str(root))
    if split in layout.splits:
        dataset = ImageFolderDataset(layout.splits[split], transform=transform, classes=classes, workers=workers)
        return dataset, classes, split
    _, val = load_image_folder(root, train_transform=transform, eval_transform=transform, seed=seed,
                               val_fraction=0.1 if val_fraction is None else val_fraction, workers=workers)
    return val, classes, split


def load_eval_data(data: str, split: str, transform: Any, *, classes_of_weights: Sequence[str] | None,
                   num_outputs: int, image_size: int, data_root: str | os.PathLike | None = None,
                   seed: int = 0, val_fraction: float | None = None,
                   workers: int = 0) -> tuple[Dataset, list[str], str]:
    """(data set, its class names, the split evaluated) for a data name or folder; see the module docstring."""
    if split not in SPLITS:
        raise InferenceError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if data not in DATASET_NAMES and Path(data).expanduser().is_dir():
        return _folder_split(Path(data).expanduser(), split, transform, classes_of_weights=classes_of_weights,
                             num_outputs=num_outputs, seed=seed, val_fraction=val_fraction, workers=workers)
    splits = load_dataset(data, root=data_root, train_transform=transform, eval_transform=transform,
                          image_size=image_size, val_fraction=val_fraction, seed=seed, workers=workers)
    check_classes(classes_of_weights, num_outputs, splits.classes, splits.name)
    return (splits.val if split == "val" else splits.train), list(splits.classes), split


def evaluate_weights(weights: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "val",
                     batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device = "cpu", ema: bool = False,
                     image_size: int | None = None, workers: int = 0, data_root: str | os.PathLike | None = None,
                     seed: int | None = None, val_fraction: float | None = None,
                     backend: str = "torch") -> dict[str, Any]:
    """Evaluate an effnet weights file or run folder on `data` (see the module docstring for which images).

    `data` defaults to the data set the weights were trained on (stored by `effnet train`).
    `ema=True` evaluates the run's `model_ema.safetensors`. `image_size` evaluates at another
    resolution. `seed` and `val_fraction` default to the training run's. `backend` "fast" evaluates the
    `effnet.fast.optimize_for_inference` model, as `Predictor`'s fast backend. Returns top1, top5 (%),
    loss, count, per-class accuracy and image counts by class name (accuracy None for a class
    without images), the confusion matrix (rows: truth, columns: prediction), and the files
    left out (`skipped_files` as paths, `skipped` with reasons).
    """
    from effnet.models import create_model
    from effnet.train.engine import evaluate
    from effnet.weights.io import read_metadata

    if batch_size < 1:
        raise InferenceError(f"batch_size must be at least 1, got {batch_size}")
    if backend not in BACKENDS:
        raise InferenceError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    target = resolve_device(device)
    path = weights_path(weights, ema)
    model = create_model(path)
    metadata = read_metadata(path)
    trained = train_config_of(metadata)
    if data is None:
        if not trained.get("data"):
            raise DataError(f"{path} does not record its training data; give the data to evaluate on")
        data = trained["data"]
    data = str(data)
    data_config = _eval_data_config(trained_data_config(model.data_config, metadata), data, image_size)
    num_outputs = model.classifier.out_features
    weight_names = getattr(model, "class_names", None)
    dataset, classes, evaluated = load_eval_data(
        data, split, make_eval_transform(data_config), classes_of_weights=weight_names, num_outputs=num_outputs,
        image_size=data_config.input_size[1], data_root=data_root,
        seed=int(trained.get("seed", 0)) if seed is None else seed,
        val_fraction=trained.get("val_fraction") if val_fraction is None else val_fraction, workers=workers)
    loader = make_loader(dataset, batch_size, workers=workers)
    runs = model.to(target)
    if backend == "fast":
        from effnet.fast import optimize_for_device

        runs = optimize_for_device(model, target)
    metrics = evaluate(runs, loader, num_outputs, device=target)
    skipped = list(getattr(dataset, "skipped", []))
    return build_report(metrics, list(weight_names) if weight_names is not None else classes, {
        "weights": str(path), "ema": ema, "model": model.spec.name, "backend": backend, "data": data,
        "split": evaluated,
        "image_size": data_config.input_size[1], "crop_pct": data_config.crop_pct,
        "skipped_files": [item.path for item in skipped],
        "skipped": [{"path": item.path, "reason": item.reason} for item in skipped],
    })


def build_report(metrics: dict[str, Any], class_names: list[str], context: dict[str, Any]) -> dict[str, Any]:
    """The metrics of `evaluate` keyed by class name, plus where they came from."""
    confusion = metrics["confusion"]
    totals = [sum(row) for row in confusion]
    accuracy = {name: (100.0 * confusion[index][index] / totals[index] if totals[index] else None)
                for index, name in enumerate(class_names)}
    return {
        "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"], "count": metrics["count"],
        **context,
        "class_names": class_names,
        "per_class_accuracy": accuracy,
        "per_class_count": dict(zip(class_names, totals)),
        "confusion": confusion,
    }


# ---------------------------------------------------------------- files


def write_confusion(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write `confusion.csv` (rows: truth), `per_class.csv` and `confusion.png` into `out_dir`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InferenceError(f"output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    names, confusion = report["class_names"], report["confusion"]
    with open(out / "confusion.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["truth \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, confusion))
    with open(out / "per_class.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["index", "class", "images", "correct", "accuracy"])
        for index, (name, row) in enumerate(zip(names, confusion)):
            accuracy = report["per_class_accuracy"][name]
            writer.writerow([index, name, sum(row), row[index], "" if accuracy is None else f"{accuracy:.4f}"])
    plot_confusion(names, confusion, out / "confusion.png",
                   title=f"{report.get('model', '')} on {report.get('data', '')}: top-1 {report['top1']:.2f}%")
    return [out / "confusion.csv", out / "per_class.csv", out / "confusion.png"]


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """`eval.json` (the whole report) plus the files of `write_confusion`."""
    written = write_confusion(report, out_dir)
    path = Path(out_dir) / "eval.json"
    path.write_text(json.dumps(report, indent=2))
    return [path, *written]


def plot_confusion(names: Sequence[str], confusion: Sequence[Sequence[int]], path: Path, title: str = "") -> None:
    """A row-normalised heat map (colour: share of each true class), counts written in small matrices."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state; PNG renders with Agg

    counts = torch.tensor(confusion, dtype=torch.float64)  # (classes, classes)
    shares = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = len(names)
    side = min(4.0 + 0.35 * size, 30.0)
    figure = Figure(figsize=(side, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    axes.set_xlabel("predicted")
    axes.set_ylabel("truth")
    axes.set_title(title, fontsize="medium")
    if size <= LABELLED_AXES_MAX:
        axes.set_xticks(range(size), [str(name) for name in names], rotation=90)
        axes.set_yticks(range(size), [str(name) for name in names])
    if size <= ANNOTATED_CELLS_MAX:
        for row in range(size):
            for column in range(size):
                value = int(counts[row, column])
                if value:
                    dark = shares[row, column] > 0.5
                    axes.text(column, row, str(value), ha="center", va="center", fontsize="small",
                              color="white" if dark else "black")
    figure.savefig(path, dpi=100)
