"""Export to ONNX, TorchScript and torch.export: files load back in their own runtime and match eager.

Models run at 64 px (checks at 64x64 and 65x66, an odd side for TF "same" padding) with random
BatchNorm statistics, so every normalisation and padding path is exercised. The dynamo ONNX
exporter takes 10-20 s per model here: one run goes through the CLI, the rest are marked slow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import effnet
import effnet.cli
from effnet.export import ExportError, ParityError, check_parity, export_model, fold_batchnorm
from effnet.inference import InferenceError, Predictor
from effnet.weights.io import save_weights_file

MODELS = ["efficientnet_b0", "tf_efficientnet_b0"]
TOLERANCE = 1e-4
# torch.jit and the TorchScript-based ONNX exporter are deprecated in torch 2.9+: deliberate use here.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


@pytest.fixture
def main():
    return effnet.cli.main


def make_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A 64 px model with non-trivial BatchNorm statistics and affine parameters."""
    torch.manual_seed(0)
    model = effnet.create_model(name, resolution=64, num_classes=num_classes).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def assert_full_grid(report) -> None:
    assert report.max_relative_error <= TOLERANCE
    assert {check.batch_size for check in report.checks} == {1, 2}
    assert {(check.height, check.width) for check in report.checks} == {(64, 64), (65, 66)}
    assert report.dynamic_batch and report.dynamic_hw


@pytest.mark.parametrize("name", MODELS)
def test_torch_export_matches_eager_at_two_batch_and_input_sizes(name: str, tmp_path: Path) -> None:
    report = export_model(make_model(name), "torch-export", tmp_path / "model.pt2", verbose=False)
    assert_full_grid(report)
    assert (tmp_path / "model.pt2").stat().st_size > 1_000_000


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_matches_eager(name: str, tmp_path: Path) -> None:
    report = export_model(make_model(name), "torchscript", tmp_path / "model.pt", verbose=False)
    assert_full_grid(report)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_torchscript_exporter_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    report = export_model(make_model(name), "onnx", tmp_path / "model.onnx", dynamo=False, opset=17,
                          verbose=False)
    assert_full_grid(report)
    assert report.opset == 17 and report.dynamo is False


def test_cli_export_onnx_dynamo_writes_the_file_and_prints_parity(main, tmp_path: Path, capsys) -> None:
    output = tmp_path / "tf_b0.onnx"
    assert main(["export", "--model", "tf_efficientnet_b0", "--format", "onnx", "--output", str(output),
                 "--image-size", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert output.is_file() and report["output"] == str(output)
    assert report["dynamo"] is True and report["opset"] == 18
    assert report["max_relative_error"] <= TOLERANCE
    assert {(c["batch_size"], c["height"], c["width"]) for c in report["checks"]} == {
        (1, 64, 64), (2, 64, 64), (1, 65, 66), (2, 65, 66)}


def test_cli_export_text_mode_prints_the_max_relative_error(main, tmp_path: Path, capsys) -> None:
    weights = tmp_path / "b0.safetensors"
    model = make_model("efficientnet_b0", num_classes=3)
    save_weights_file(weights, model.state_dict(), model.spec, model.data_config, ["a", "b", "c"])
    output = tmp_path / "b0.pt"
    assert main(["export", "--weights", str(weights), "--format", "torchscript", "--output", str(output)]) == 0
    assert "max relative error" in capsys.readouterr().out
    assert torch.jit.load(str(output))(torch.randn(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.slow
def test_onnx_dynamo_exporter_matches_onnxruntime(tmp_path: Path) -> None:
    """Symmetric padding; TF "same" padding's dynamo export is the CLI test's above."""
    model = make_model("efficientnet_b0")
    assert_full_grid(export_model(model, "onnx", tmp_path / "model.onnx", verbose=False))


def test_bad_requests_are_typed_errors(main, tmp_path: Path, capsys) -> None:
    model = make_model("efficientnet_b0")
    with pytest.raises(ExportError, match="format must be"):
        export_model(model, "tflite", tmp_path / "m.tflite")
    with pytest.raises(ExportError, match=".pt2"):
        export_model(model, "torch-export", tmp_path / "m.pt")
    with pytest.raises(ExportError, match="tolerance must be positive, got -1"):
        export_model(model, "onnx", tmp_path / "m.onnx", tolerance=-1)
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ExportError, match=f"output {tmp_path} is a folder; name the file to write, e.g. .*model.onnx"):
        export_model(model, "onnx", tmp_path)
    with pytest.raises(ExportError, match="opset only applies"):
        export_model(model, "torchscript", tmp_path / "m.pt", opset=18)
    with pytest.raises(ExportError, match="one size only"):
        export_model(model, "torchscript", tmp_path / "m.pt", image_sizes=[64, 65], dynamic_hw=False)
    with pytest.raises(ExportError, match="features_only"):
        export_model(effnet.create_model("efficientnet_b0", features_only=True), "torchscript", tmp_path / "m.pt",
                     image_sizes=[64])
    assert main(["export", "--model", "efficientnet_b0", "--format", "torch-export", "--output",
                 str(tmp_path / "m.onnx")]) == 2
    assert "effnet export: error:" in capsys.readouterr().err


def test_parity_above_the_tolerance_fails_loudly() -> None:
    model = make_model("efficientnet_b0", num_classes=10)

    def drifted(x: torch.Tensor) -> torch.Tensor:
        return model(x) * (1 + 1e-3)

    with pytest.raises(ParityError, match="relative error"):
        check_parity(model, drifted, [(64, 64)], [1, 2])


@pytest.mark.parametrize("name", MODELS)
def test_fold_batchnorm_is_equal_within_1e_5(name: str) -> None:
    model = make_model(name)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    x = torch.randn(2, 3, 65, 66)
    with torch.inference_mode():
        expected, actual = model(x), folded(x)
    assert ((actual - expected).abs().max() / expected.abs().max()).item() <= 1e-5
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    with pytest.raises(ExportError, match="effnet model"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))


# ---------------------------------------------------------------- the onnxruntime predictor


@pytest.fixture(scope="module")
def weights_and_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ort")
    model = make_model("efficientnet_b0", num_classes=5)
    weights = save_weights_file(folder / "b0.safetensors", model.state_dict(), model.spec, model.data_config,
                                ["a", "b", "c", "d", "e"])
    onnx = folder / "b0.onnx"
    export_model(effnet.create_model(weights), "onnx", onnx, dynamo=False, verbose=False)
    return weights, onnx


def images(count: int = 3) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, (40 + 7 * index, 50, 3), dtype=np.uint8) for index in range(count)]


def test_predictor_onnxruntime_gives_torch_top_k(weights_and_onnx: tuple[Path, Path]) -> None:
    weights, onnx = weights_and_onnx
    expected = Predictor.from_weights(weights).predict(images(), topk=3)
    actual = Predictor.from_weights(weights, backend="onnxruntime", onnx_path=onnx,
                                    intra_op_threads=1).predict(images(), topk=3)
    assert [[g["index"] for g in row] for row in actual] == [[g["index"] for g in row] for row in expected]
    for row, reference in zip(actual, expected):
        assert [g["prob"] for g in row] == pytest.approx([g["prob"] for g in reference], abs=1e-5)
    with pytest.raises(InferenceError, match="backend must be"):
        Predictor.from_weights(weights, backend="tensorrt")


def test_cli_predict_backend_onnxruntime_matches_torch(main, weights_and_onnx: tuple[Path, Path],
                                                        tmp_path: Path, capsys) -> None:
    from PIL import Image

    weights, onnx = weights_and_onnx
    paths = []
    for index, array in enumerate(images(2)):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(array).save(paths[-1])
    common = ["predict", *map(str, paths), "--weights", str(weights), "--topk", "3", "--json"]
    assert main(common) == 0
    torch_result = json.loads(capsys.readouterr().out)
    assert main(common + ["--backend", "onnxruntime", "--onnx", str(onnx), "--threads", "1"]) == 0
    ort_result = json.loads(capsys.readouterr().out)
    assert [[g["index"] for g in r["topk"]] for r in ort_result] == [[g["index"] for g in r["topk"]]
                                                                      for r in torch_result]


@pytest.mark.slow
def test_predictor_onnxruntime_exports_in_process(weights_and_onnx: tuple[Path, Path]) -> None:
    weights, _ = weights_and_onnx
    expected = Predictor.from_weights(weights).predict(images(), topk=2)
    actual = Predictor.from_weights(weights, backend="onnxruntime").predict(images(), topk=2)
    assert [[g["index"] for g in row] for row in actual] == [[g["index"] for g in row] for row in expected]
