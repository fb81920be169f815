"""Predictor and evaluate_weights on tiny models and tiny generated images (all made in tmp_path)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.data import DataError, ImageLoadError, SkippedFileWarning, load_dataset
from effnet.inference import (
    ClassMismatchError,
    InferenceError,
    Predictor,
    class_labels,
    evaluate_weights,
    write_confusion,
)
from effnet.inference.evaluation import load_eval_data
from effnet.models import get_entry
from effnet.weights.io import save_weights_file

CLASSES = ["cat", "dog", "fox"]
COLOURS = [(220, 40, 40), (40, 200, 60), (30, 60, 230)]


def tiny_model(num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = effnet.scale_by_phi(get_entry("efficientnet_b0").spec, -3)
    return effnet.create_model(spec, num_classes=num_classes, resolution=32)


def save(model: torch.nn.Module, path: Path, names: list[str] | None = CLASSES, **extra) -> Path:
    return save_weights_file(path, model.state_dict(), model.spec, model.data_config, names, extra or None)


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), np.uint8) + np.array(colour, np.uint8)
    pixels[::3] //= 2  # stripes: not a flat image, so resizing paths are exercised
    Image.fromarray(pixels).save(path)
    return path


def make_tree(root: Path, classes: list[str] = CLASSES, per_class: int = 2) -> Path:
    for name, colour in zip(classes, COLOURS * 3):
        for index in range(per_class):
            write_image(root / name / f"{index}.png", colour)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tiny_model(), tmp_path_factory.mktemp("weights") / "model.safetensors")


@pytest.fixture(scope="module")
def predictor(weights: Path) -> Predictor:
    return Predictor.from_weights(weights)


# ---------------------------------------------------------------- Predictor


def test_paths_pil_arrays_and_tensors_get_the_same_preprocessing(predictor: Predictor, tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", COLOURS[0])
    pixels = np.array(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
    inputs = [path, str(path), Image.open(path), pixels, torch.from_numpy(pixels).permute(2, 0, 1),
              torch.from_numpy(pixels).permute(2, 0, 1).float() / 255]
    results = predictor.predict(inputs, topk=3)
    assert len(results) == len(inputs)
    first = results[0]
    assert [guess["label"] for guess in first] == [CLASSES[guess["index"]] for guess in first]
    probs = [guess["prob"] for guess in first]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    for other in results[1:]:
        assert [guess["index"] for guess in other] == [guess["index"] for guess in first]
        assert [guess["prob"] for guess in other] == pytest.approx(probs, abs=1e-4)


def test_batches_do_not_change_results_and_topk_is_clamped(weights: Path, tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.png", COLOURS[i % 3], (16 + i, 30)) for i in range(5)]
    one_batch = Predictor.from_weights(weights, batch_size=8).predict(paths, topk=10)
    small_batches = Predictor.from_weights(weights, batch_size=2).predict(paths, topk=10)
    assert all(len(topk) == 3 for topk in one_batch)  # only 3 classes
    for a, b in zip(one_batch, small_batches):
        assert [g["prob"] for g in a] == pytest.approx([g["prob"] for g in b], abs=1e-5)
    assert len(Predictor.from_weights(weights).predict(paths[0], topk=1)) == 1  # a single path is one input
    with pytest.raises(InferenceError, match="topk must be at least 1"):
        Predictor.from_weights(weights).predict(paths, topk=0)


def test_grey_alpha_and_one_channel_inputs(predictor: Predictor) -> None:
    inputs = [np.full((9, 7), 128, np.uint8), np.zeros((9, 7, 4), np.uint8), torch.zeros(1, 9, 7)]
    assert len(predictor.predict(inputs)) == 3
    assert len(predictor.predict(torch.zeros(2, 3, 8, 8))) == 2  # a 4-D tensor is a batch of CHW images


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((4, 4, 5), np.uint8), "1, 3 or 4 channels"),
    (torch.zeros(4, 4, 3), "CHW"),
    (42, "expected a path"),
])
def test_unusable_inputs_are_clear_errors(predictor: Predictor, bad, message: str) -> None:
    with pytest.raises(InferenceError, match=message):
        predictor.predict([bad])


def test_unreadable_or_missing_files_name_the_file(predictor: Predictor, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    good = write_image(tmp_path / "good.png", COLOURS[1])
    with pytest.raises(ImageLoadError, match="broken.jpg") as caught:
        predictor.predict([good, broken])
    assert isinstance(caught.value, DataError) and "\n" not in str(caught.value)
    with pytest.raises(ImageLoadError, match="missing.png: no such file"):
        predictor.predict([good, tmp_path / "missing.png"])


def test_skip_unreadable_leaves_a_broken_file_out_and_keeps_the_rest(predictor: Predictor, tmp_path: Path) -> None:
    """A truncated JPEG passes the header check and fails to decode: with `skip_unreadable` its place is None, with a
    warning naming it, and the other inputs' results are those they get alone (batch 2: it falls in the first)."""
    from test_data import truncate_jpeg

    good = [write_image(tmp_path / f"{index}.png", colour) for index, colour in enumerate(COLOURS)]
    truncated = tmp_path / "half.jpg"
    truncate_jpeg(truncated)
    batch_size, predictor.batch_size = predictor.batch_size, 2
    try:
        with pytest.warns(SkippedFileWarning, match=r"skipping .*half.jpg: "):
            results = predictor.predict([good[0], truncated, good[1], good[2]], topk=2, skip_unreadable=True)
        with pytest.raises(ImageLoadError, match="half.jpg"):
            predictor.predict([good[0], truncated], topk=2)
        with pytest.warns(SkippedFileWarning):  # a batch of nothing but broken files
            assert predictor.predict([truncated, truncated], skip_unreadable=True) == [None, None]
    finally:
        predictor.batch_size = batch_size
    assert results[1] is None
    assert [results[0], results[2], results[3]] == predictor.predict(good, topk=2)


def test_labels_saved_imagenet_or_numbered(tmp_path: Path) -> None:
    assert class_labels(None, 4) == ["class_0", "class_1", "class_2", "class_3"]
    assert class_labels(["a", "b"], 3) == ["class_0", "class_1", "class_2"]  # names of another head
    unnamed = save(tiny_model(1000), tmp_path / "imagenet.safetensors", names=None)
    predictor = Predictor.from_weights(unnamed)
    assert predictor.labels[:2] == ["tench", "goldfish"] and len(predictor.labels) == 1000
    guess = predictor.predict([np.zeros((8, 8, 3), np.uint8)], topk=2)[0][0]
    assert guess["label"] == predictor.labels[guess["index"]]
    numbered = save(tiny_model(4), tmp_path / "four.safetensors", names=None)
    assert Predictor.from_weights(numbered).labels == ["class_0", "class_1", "class_2", "class_3"]


def test_small_image_training_data_is_not_centre_cropped(tmp_path: Path) -> None:
    model = tiny_model(10)
    plain = save(model, tmp_path / "plain.safetensors", names=None)
    digits = save(model, tmp_path / "digits.safetensors", names=None, train_config={"data": "builtin", "seed": 3})
    assert Predictor.from_weights(plain).data_config.crop_pct == model.data_config.crop_pct < 1.0
    assert Predictor.from_weights(digits).data_config.crop_pct == 1.0


def test_from_model_and_device_errors() -> None:
    predictor = Predictor.from_model("efficientnet_b0", num_classes=2, resolution=32)
    assert predictor.labels == ["class_0", "class_1"] and predictor.data_config.input_size == (3, 32, 32)
    with pytest.raises(InferenceError, match="device must be"):
        Predictor(tiny_model(), device="tpu")


# ---------------------------------------------------------------- evaluate_weights


def test_evaluate_a_plain_class_tree_with_a_bad_file(weights: Path, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "dog" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="bad.png"):
        report = evaluate_weights(weights, tree, batch_size=4)
    assert report["split"] == "all" and report["count"] == 6
    assert 0 <= report["top1"] <= report["top5"] == 100.0 and report["loss"] > 0
    assert list(report["per_class_accuracy"]) == CLASSES and report["per_class_count"] == {n: 2 for n in CLASSES}
    assert sum(map(sum, report["confusion"])) == 6
    assert report["skipped_files"] == [str(tree / "dog" / "bad.png")]
    assert report["skipped"][0]["reason"]
    json.dumps(report)  # the report is plain JSON


def test_evaluate_the_val_split_of_a_train_val_tree(weights: Path, tmp_path: Path) -> None:
    make_tree(tmp_path / "data" / "train", per_class=2)
    make_tree(tmp_path / "data" / "val", CLASSES[:2], per_class=1)  # a val split may lack a class
    report = evaluate_weights(weights, tmp_path / "data")
    assert report["split"] == "val" and report["count"] == 2
    assert report["per_class_count"]["fox"] == 0 and report["per_class_accuracy"]["fox"] is None
    assert evaluate_weights(weights, tmp_path / "data", split="train")["count"] == 6


def test_evaluating_the_fast_model_gives_the_same_report(weights: Path, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", per_class=3)
    plain = evaluate_weights(weights, tree, batch_size=4)
    fast = evaluate_weights(weights, tree, batch_size=4, backend="fast")
    assert (plain["backend"], fast["backend"]) == ("torch", "fast")
    assert fast["confusion"] == plain["confusion"] and fast["top1"] == plain["top1"]
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    with pytest.raises(InferenceError, match="backend must be one of torch, fast, got 'onnx'"):
        evaluate_weights(weights, tree, backend="onnx")


def test_ema_weights_come_from_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save(tiny_model(), run / "model.safetensors")
    tree = make_tree(tmp_path / "tree", per_class=1)
    with pytest.raises(effnet.WeightsError, match="model_ema.safetensors not found"):
        evaluate_weights(run, tree, ema=True)
    save(tiny_model(), run / "model_ema.safetensors")
    assert evaluate_weights(run, tree, ema=True)["weights"] == str(run / "model_ema.safetensors")
    assert evaluate_weights(run / "model.safetensors", tree, ema=True)["ema"] is True


def test_confusion_files(weights: Path, tmp_path: Path) -> None:
    report = evaluate_weights(weights, make_tree(tmp_path / "tree", per_class=1))
    written = write_confusion(report, tmp_path / "out")
    assert sorted(path.name for path in written) == ["confusion.csv", "confusion.png", "per_class.csv"]
    rows = list(csv.reader(open(tmp_path / "out" / "confusion.csv")))
    assert rows[0][1:] == CLASSES and [row[0] for row in rows[1:]] == CLASSES
    assert sum(int(cell) for row in rows[1:] for cell in row[1:]) == 3
    per_class = list(csv.DictReader(open(tmp_path / "out" / "per_class.csv")))
    assert [row["class"] for row in per_class] == CLASSES and all(row["images"] == "1" for row in per_class)
    assert (tmp_path / "out" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_mismatch_is_a_clear_error(weights: Path, tmp_path: Path) -> None:
    other = make_tree(tmp_path / "other", ["cat", "dog", "owl"], per_class=1)
    with pytest.raises(ClassMismatchError, match=r"not in the data: \[fox\].*not in the weights: \[owl\]"):
        evaluate_weights(weights, other)
    reordered = save(tiny_model(), tmp_path / "reordered.safetensors", names=["dog", "cat", "fox"])
    with pytest.raises(ClassMismatchError, match="another order"):
        evaluate_weights(reordered, make_tree(tmp_path / "tree", per_class=1))
    with pytest.raises(ClassMismatchError, match=r"weights \[cat, dog, fox\] \(3\), data \[0, 1, .*\(10\)"):
        load_eval_data("builtin", "val", None, classes_of_weights=CLASSES, num_outputs=3, image_size=32)


def test_named_data_sets_and_the_training_data_default(tmp_path: Path) -> None:
    digits = [str(digit) for digit in range(10)]
    dataset, classes, split = load_eval_data("builtin", "val", None, classes_of_weights=digits, num_outputs=10,
                                             image_size=32)
    assert classes == digits and split == "val" and len(dataset) == len(load_dataset("builtin").val)
    unrecorded = save(tiny_model(10), tmp_path / "w.safetensors", names=digits)
    with pytest.raises(DataError, match="does not record its training data"):
        evaluate_weights(unrecorded)
    with pytest.raises(InferenceError, match="split must be"):
        evaluate_weights(unrecorded, "builtin", split="test")
