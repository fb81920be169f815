"""Hugging Face transformers EfficientNet -> effnet: keys, logits, the image processor, refusals."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from peers import build_peer, build_transformers, relative_error
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import EfficientNetImageProcessor

import effnet
from effnet.data.transforms import make_eval_transform
from effnet.errors import WeightsError
from effnet.weights.convert import convert_file
from effnet.weights.converters.matching import peer_model
from effnet.weights.converters.transformers import PROCESSOR_DEFAULTS, convert, preprocessing
from effnet.weights.detect import detect_model

# The google/efficientnet-b* hub processors: squash to the model's size, PIL NEAREST, ImageNet's
# mean and the square root of its std (divided by twice: normalize, then include_top).
_HUB_PROCESSOR = dict(size={"height": 64, "width": 64}, resample=0, do_center_crop=False,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.47853944, 0.4732864, 0.47434163])
_CLASSES = ["tench", "goldfish", "great white shark"]


@pytest.fixture(scope="module")
def peer() -> torch.nn.Module:
    model = build_peer("transformers", "google/efficientnet-b0", (64, 64))
    model.classifier = torch.nn.Linear(1280, len(_CLASSES))
    torch.nn.init.normal_(model.classifier.weight, std=0.1, generator=torch.Generator().manual_seed(1))
    model.config.num_labels = len(_CLASSES)
    model.config.id2label = dict(enumerate(_CLASSES))
    model.config.label2id = {name: index for index, name in enumerate(_CLASSES)}
    return model.eval()


@pytest.fixture(scope="module")
def hub_folder(peer, tmp_path_factory) -> Path:
    """A folder as `save_pretrained` writes it: config.json, model.safetensors, preprocessor_config.json."""
    folder = tmp_path_factory.mktemp("hf") / "efficientnet-b0"
    peer.save_pretrained(folder)
    EfficientNetImageProcessor(**_HUB_PROCESSOR).save_pretrained(folder)
    return folder


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_processor_defaults_are_the_installed_classes() -> None:
    processor = EfficientNetImageProcessor()
    for name, value in PROCESSOR_DEFAULTS.items():
        installed = getattr(processor, name)
        if isinstance(value, dict):
            installed = {key: getattr(installed, key) for key in value}
        assert (list(installed) if isinstance(installed, tuple) else installed) == value, name


def test_hub_folder_converts_with_detection_logits_classes_and_preprocessing(hub_folder, peer, tmp_path) -> None:
    result = convert_file(hub_folder, tmp_path / "b0.safetensors")
    assert (result.source, result.model_name, result.detected) == ("transformers", "tf_efficientnet_b0",
                                                                  ("source", "model"))
    ours = effnet.create_model(result.path).eval()
    assert ours.class_names == _CLASSES
    config = ours.data_config
    assert (config.input_size, config.crop_pct, config.crop_mode, config.interpolation) == (
        (3, 64, 64), 1.0, "squash", "nearest-exact")
    assert config.mean == pytest.approx((0.485, 0.456, 0.406))
    assert config.std == pytest.approx((0.229, 0.224, 0.225), abs=1e-7)
    with safe_open(str(result.path), framework="pt") as handle:
        assert handle.metadata()["preprocessing"] == "preprocessor_config.json"
    # What a transformers user gets from an image, and what effnet gets from the same image.
    processor = EfficientNetImageProcessor.from_pretrained(hub_folder)
    images = [_image(71, 97, seed) for seed in range(2)]
    theirs = processor(images, return_tensors="pt")["pixel_values"]
    mine = torch.stack([make_eval_transform(config)(image) for image in images])
    assert (mine - theirs).abs().max() <= 1e-5
    with torch.no_grad():
        assert relative_error(ours(mine), peer(pixel_values=theirs).logits) <= 1e-5


@pytest.mark.parametrize("settings", [
    None,  # EfficientNetImageProcessor(): squash to 346, bicubic, (u - 0.5) / 0.5 / 0.5
    dict(size={"height": 80, "width": 80}, crop_size={"height": 64, "width": 64}, do_center_crop=True,
         resample=2, rescale_offset=True, rescale_factor=1 / 127.5, include_top=False),
    dict(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64}, do_center_crop=True, resample=3,
         do_normalize=False),
])
def test_preprocessing_reproduces_the_processor(settings) -> None:
    processor = EfficientNetImageProcessor(**(settings or {}))
    config = effnet.create_model("tf_efficientnet_b0").data_config
    config = replace(config, **preprocessing(settings))
    image = _image(71, 97)
    theirs = processor(image, return_tensors="pt")["pixel_values"][0]
    mine = make_eval_transform(config)(image)
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max() <= 1e-5


def test_headless_model_and_bare_state_dict(peer, tmp_path) -> None:
    trunk = {key[len("efficientnet."):]: value for key, value in peer.state_dict().items()
             if key.startswith("efficientnet.")}  # EfficientNetModel's keys
    save_file(trunk, tmp_path / "trunk.safetensors")
    result = convert_file(tmp_path / "trunk.safetensors", tmp_path / "out.safetensors")
    ours = effnet.create_model(result.path).eval()
    assert (result.source, result.model_name, ours.num_classes) == ("transformers", "tf_efficientnet_b0", 0)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = peer.efficientnet(pixel_values=images).pooler_output
        assert relative_error(ours(images), pooled) <= 1e-5
    # No processor config: EfficientNetImageProcessor's own defaults, and the file says so.
    assert (ours.data_config.input_size, ours.data_config.std) == ((3, 346, 346), (0.25, 0.25, 0.25))
    with safe_open(str(result.path), framework="pt") as handle:
        assert "no preprocessor_config.json" in handle.metadata()["preprocessing"]


def test_unsupported_configs_and_damaged_files_are_refused(hub_folder, tmp_path) -> None:
    folder = tmp_path / "max_pool"
    shutil.copytree(hub_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "pooling_type": "max"}))
    with pytest.raises(WeightsError, match="pooling_type='max' has no effnet equivalent"):
        convert_file(folder, tmp_path / "out.safetensors")
    data = (hub_folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot read safetensors"):
        convert_file(folder / "model.safetensors", tmp_path / "out.safetensors")
    with pytest.raises(WeightsError, match="resample=1 has no effnet equivalent"):
        preprocessing({"resample": 1})  # LANCZOS
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("variant", range(8))
def test_every_hub_configuration_fits_its_tf_twin(variant) -> None:
    # Shapes only, built on the meta device: every google/efficientnet-bN layout is its table row's.
    with torch.device("meta"):
        state_dict = convert(build_transformers(f"google/efficientnet-b{variant}", (64, 64)).state_dict())
    assert detect_model("transformers", state_dict).model_name == peer_model(
        "transformers", f"google/efficientnet-b{variant}")[0] == f"tf_efficientnet_b{variant}"
