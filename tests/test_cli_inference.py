"""`effnet eval`, `effnet predict` and `effnet data check` in-process, plus one real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import effnet
from effnet.cli import main
from effnet.models import get_entry
from effnet.weights.io import save_weights_file

CLASSES = ["cat", "dog", "fox"]
COLOURS = [(220, 40, 40), (40, 200, 60), (30, 60, 230)]


def write_image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((24, 20, 3), np.uint8) + np.array(colour, np.uint8)).save(path)
    return path


def make_tree(root: Path, per_class: int = 2) -> Path:
    for name, colour in zip(CLASSES, COLOURS):
        for index in range(per_class):
            write_image(root / name / f"{index}.png", colour)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = effnet.create_model(effnet.scale_by_phi(get_entry("efficientnet_b0").spec, -3), num_classes=3,
                                resolution=32)
    path = tmp_path_factory.mktemp("run") / "model.safetensors"
    return save_weights_file(path, model.state_dict(), model.spec, model.data_config, CLASSES)


def run_json(capsys: pytest.CaptureFixture, *argv: object) -> object:
    assert main([str(arg) for arg in argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_json_is_exactly_the_documented_list(weights: Path, tmp_path: Path, capsys) -> None:
    images = [write_image(tmp_path / "a.png", COLOURS[0]), write_image(tmp_path / "b.jpg", COLOURS[2])]
    result = run_json(capsys, "predict", *images, "--weights", weights, "--topk", 2, "--json")
    assert [entry["image"] for entry in result] == [str(path) for path in images]
    for entry in result:
        assert set(entry) == {"image", "topk"} and len(entry["topk"]) == 2
        for guess in entry["topk"]:
            assert set(guess) == {"index", "label", "prob"} and guess["label"] == CLASSES[guess["index"]]
    assert main(["predict", str(images[0]), "--weights", str(weights.parent)]) == 0  # a run folder works too
    out = capsys.readouterr().out
    assert out.startswith(f"{images[0]}\n  1. ") and out.count("%") == 3


def test_predict_takes_folders_of_images_and_skips_what_is_not_one(weights: Path, tmp_path: Path) -> None:
    """A folder stands for the images under it, in name order (nested folders too); a file there that is not an
    image is one warning line and is left out; a named file and the folder's files keep the order given."""
    tree = make_tree(tmp_path / "photos", per_class=1)
    (tree / "dog" / "notes.png").write_text("not an image")
    (tree / "readme.txt").write_text("not an image either, and not named like one")
    single = write_image(tmp_path / "single.png", COLOURS[1])
    result = subprocess.run([sys.executable, "-m", "effnet", "predict", str(single), str(tree), "--weights",
                             str(weights), "--topk", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [entry["image"] for entry in json.loads(result.stdout)] == [
        str(single), str(tree / "cat" / "0.png"), str(tree / "dog" / "0.png"), str(tree / "fox" / "0.png")]
    assert result.stderr.splitlines() == [f"warning: skipping {tree}/dog/notes.png: not an image Pillow can identify"]
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--weights", str(weights)]) == 2


def test_predict_over_a_folder_skips_a_file_that_cannot_be_decoded(weights: Path, tmp_path: Path, capsys) -> None:
    """A truncated JPEG passes the header check and fails only when decoded, after other images' work: given a
    folder, it is one warning line and the rest are printed; named alone, it is one error line."""
    from test_data import truncate_jpeg

    tree = make_tree(tmp_path / "photos", per_class=1)
    truncate_jpeg(tree / "dog" / "1.jpg")
    assert main(["predict", str(tree), "--weights", str(weights), "--topk", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert [entry["image"] for entry in json.loads(captured.out)] == [
        str(tree / "cat" / "0.png"), str(tree / "dog" / "0.png"), str(tree / "fox" / "0.png")]
    assert captured.err.startswith(f"warning: skipping {tree}/dog/1.jpg: ") and captured.err.count("\n") == 1
    assert main(["predict", str(tree / "dog" / "1.jpg"), "--weights", str(weights)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("effnet predict: error: cannot load image ") and captured.err.count("\n") == 1
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    truncate_jpeg(only_broken / "a.jpg")
    assert main(["predict", str(only_broken), "--weights", str(weights)]) == 2
    assert capsys.readouterr().err.endswith("effnet predict: error: none of the images could be read\n")


def test_predict_with_a_model_name_uses_imagenet_labels(tmp_path: Path, capsys) -> None:
    image = write_image(tmp_path / "a.png", COLOURS[1])
    assert main(["predict", str(image), "--model", "efficientnet_b0", "--topk", "1", "--json"]) == 0
    captured = capsys.readouterr()
    guess = json.loads(captured.out)[0]["topk"][0]
    from torchvision.models._meta import _IMAGENET_CATEGORIES
    assert guess["label"] == _IMAGENET_CATEGORIES[guess["index"]]
    assert "random weights" in captured.err


def test_eval_json_text_and_output_files(weights: Path, tmp_path: Path, capsys) -> None:
    tree = make_tree(tmp_path / "tree")
    report = run_json(capsys, "eval", "--weights", weights, "--data", tree, "--batch-size", 4, "--json",
                      "--output", tmp_path / "out")
    assert {"top1", "top5", "loss", "per_class_accuracy", "count"} <= set(report)
    assert report["count"] == 6 and list(report["per_class_accuracy"]) == CLASSES
    assert {path.name for path in (tmp_path / "out").iterdir()} == {
        "eval.json", "confusion.csv", "confusion.png", "per_class.csv"}
    assert main(["eval", "--weights", str(weights), "--data", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "top-5" in out and "loss" in out and "fox" in out


def test_eval_class_mismatch_is_one_error_line(weights: Path, tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "tree" / "owl" / "0.png", COLOURS[0])
    assert main(["eval", "--weights", str(weights), "--data", str(tmp_path / "tree")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("effnet eval: error: ") and "owl" in err and err.count("\n") == 1


def test_data_check_exit_codes_and_json(tmp_path: Path, capsys) -> None:
    tree = make_tree(tmp_path / "tree", per_class=1)
    report = run_json(capsys, "data", "check", tree, "--json")
    assert report["ok"] and report["bad_files"] == [] and report["total_images"] == 3
    (tree / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tree / "fox" / "notes.txt").write_text("not an image")
    assert main(["data", "check", str(tree), "--json"]) == 1
    bad = {Path(item["path"]).name: item for item in json.loads(capsys.readouterr().out)["bad_files"]}
    assert set(bad) == {"broken.jpg", "notes.txt"} and all(item["reason"] for item in bad.values())
    assert bad["broken.jpg"]["class_name"] == "dog"
    assert main(["data", "check", str(tree)]) == 1
    assert "broken.jpg" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("effnet data: error: data folder not found")


def test_bad_image_path_in_a_real_process_is_one_line_exit_2(weights: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "effnet", "predict", str(broken), "--weights", str(weights)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("effnet predict: error: cannot load image ") and str(broken) in lines[0]


def test_predict_fast_backend_gives_the_torch_backends_answers(weights: Path, tmp_path: Path, capsys) -> None:
    images = [write_image(tmp_path / f"{i}.png", COLOURS[i]) for i in range(3)]
    eager = run_json(capsys, "predict", *images, "--weights", weights, "--topk", 3, "--json")
    fast = run_json(capsys, "predict", *images, "--weights", weights, "--topk", 3, "--backend", "fast", "--json")
    for a, b in zip(eager, fast):
        assert [g["index"] for g in a["topk"]] == [g["index"] for g in b["topk"]]
        assert [g["prob"] for g in a["topk"]] == pytest.approx([g["prob"] for g in b["topk"]], abs=1e-5)
