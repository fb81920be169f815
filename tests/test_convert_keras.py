"""Keras applications EfficientNet (.weights.h5, legacy .h5, .keras) -> effnet, read with h5py alone."""
from __future__ import annotations

from pathlib import Path

import h5py
import pytest
import torch
from peers import build_keras, build_peer, keras_logits, relative_error

import effnet
from effnet.errors import WeightsError
from effnet.spec.data import IMAGENET_STD
from effnet.weights.convert import convert_file
from effnet.weights.converters.keras import convert, preprocessing
from effnet.weights.keras_h5 import read_keras_weights

# Keras 3 on numpy 2 warns on every array conversion (keras/src/backend/torch/core.py).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

_CLASSES = 5


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> tuple[object, dict[str, Path]]:
    """One random Keras B0 (64 px, random BN and input statistics) saved in all three formats."""
    folder = tmp_path_factory.mktemp("keras")
    model = build_keras("EfficientNetB0", (64, 64), classes=_CLASSES)
    files = {"weights.h5": folder / "b0.weights.h5", "legacy h5": folder / "b0.h5", "keras": folder / "b0.keras"}
    model.save_weights(files["weights.h5"])  # Keras 3: layers named by class and creation order
    model.save(files["legacy h5"])  # legacy HDF5: the application's layer names
    model.save(files["keras"])  # zip holding model.weights.h5
    return model, files


def _pixels() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 255


@pytest.mark.parametrize("kind", ["weights.h5", "legacy h5", "keras"])
def test_keras_files_convert_to_the_same_logits(kind, keras_files, tmp_path) -> None:
    model, files = keras_files
    result = convert_file(files[kind], tmp_path / "b0.safetensors")
    assert (result.source, result.model_name) == ("keras", "tf_efficientnet_b0")
    ours = effnet.create_model(result.path).eval()
    assert ours.num_classes == _CLASSES
    # Keras normalises 0..255 pixels inside the model; effnet's data config carries the same step.
    import keras

    # Named `normalization_N` when other Keras models were built before in this process.
    normalization = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    config = ours.data_config
    assert config.mean == pytest.approx(tuple(normalization.mean.numpy().reshape(-1)), rel=1e-6)
    assert config.std == pytest.approx(tuple(normalization.variance.numpy().reshape(-1) ** 0.5), rel=1e-6)
    pixels = _pixels()
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = ours(((pixels / 255 - mean) / std).float())
    assert relative_error(logits, keras_logits(model, pixels)) <= 1e-5


def test_the_two_layer_namings_read_alike(keras_files) -> None:
    _, files = keras_files
    positional = read_keras_weights(files["weights.h5"])
    named = read_keras_weights(files["legacy h5"])
    assert "conv2d/kernel" in positional and "stem_conv/kernel" in named
    assert "block2a_expand_conv/kernel" in named and "block1a_dwconv/kernel" in named
    one, other = convert(positional), convert(named)
    assert one.keys() == other.keys()
    assert all(torch.equal(one[key], other[key]) for key in one)


def test_published_normalization_quirk_reads_as_imagenet_std() -> None:
    # keras-applications' ImageNet weights store ImageNet's std as the Normalization variance, and
    # EfficientNetB0(weights="imagenet") divides by sqrt(std) twice: the net std is ImageNet's.
    state_dict = {"normalization/mean": torch.tensor([0.485, 0.456, 0.406]),
                  "normalization/variance": torch.tensor(IMAGENET_STD), "normalization/count": torch.tensor(0)}
    assert preprocessing(state_dict)["std"] == IMAGENET_STD
    state_dict["normalization/variance"] = torch.tensor([0.04, 0.09, 0.16])
    assert preprocessing(state_dict)["std"] == pytest.approx((0.2, 0.3, 0.4))


def test_damaged_and_foreign_files_are_refused(keras_files, tmp_path) -> None:
    _, files = keras_files
    data = files["weights.h5"].read_bytes()
    (tmp_path / "cut.weights.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable Keras weights file"):
        convert_file(tmp_path / "cut.weights.h5", tmp_path / "out.safetensors")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["x"] = [1.0, 2.0]
    with pytest.raises(WeightsError, match="without Keras weights"):
        convert_file(tmp_path / "other.h5", tmp_path / "out.safetensors")
    torch.save(build_peer("timm", "efficientnet_b0", (64, 64)).state_dict(), tmp_path / "renamed.h5")
    with pytest.raises(WeightsError, match="not a readable Keras weights file"):
        convert_file(tmp_path / "renamed.h5", tmp_path / "out.safetensors")
    with pytest.raises(WeightsError, match=r"is a keras checkpoint, not timm \(pass --from keras\)"):
        convert_file(files["legacy h5"], tmp_path / "out.safetensors", source="timm")
    deeper = r"b0\.keras \(converted from keras\) does not fit the model: 148 missing key"
    with pytest.raises(WeightsError, match=deeper):
        convert_file(files["keras"], tmp_path / "out.safetensors", model_name="tf_efficientnet_b1")
    assert not (tmp_path / "out.safetensors").exists()
