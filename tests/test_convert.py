"""Converters and `convert_checkpoint`: layouts, the peer table, end to end, and refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peers import build_keras, build_peer, relative_error, write_hostile_checkpoint
from safetensors import safe_open
from safetensors.torch import save_file

import effnet
from effnet.errors import WeightsError
from effnet.weights.convert import (
    PEER_MATCHES,
    SOURCES,
    convert_checkpoint,
    convert_file,
    convert_state_dict,
    peer_model,
)
from effnet.weights.io import read_checkpoint
from effnet.weights.keras_h5 import read_keras_weights

# Keras 3 on numpy 2 warns on every array conversion (keras/src/backend/torch/core.py).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# One b0 of each source; each converts into the effnet model the table names.
_B0 = {"timm": "efficientnet_b0", "torchvision": "efficientnet_b0", "efficientnet_pytorch": "efficientnet-b0",
       "transformers": "google/efficientnet-b0", "keras": "EfficientNetB0"}


@pytest.fixture(scope="module")
def b0_state_dicts(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    state_dicts = {source: build_peer(source, name, (64, 64)).state_dict()
                   for source, name in _B0.items() if source != "keras"}
    path = tmp_path_factory.mktemp("keras") / "b0.weights.h5"
    build_keras("EfficientNetB0", (64, 64)).save_weights(path)
    state_dicts["keras"] = read_keras_weights(path)  # Keras' `layer/variable` layout
    return state_dicts


def _logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def _images(height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))


# --- convert_state_dict ---------------------------------------------------------------------

def test_sources_and_public_name() -> None:
    assert SOURCES == ("timm", "torchvision", "efficientnet_pytorch", "transformers", "keras")
    assert effnet.convert_state_dict is convert_state_dict


@pytest.mark.parametrize("source", SOURCES)
def test_converted_keys_and_shapes_are_exactly_the_models(source, b0_state_dicts) -> None:
    model_name, overrides = peer_model(source, _B0[source])
    expected = effnet.create_model(model_name, **overrides).state_dict()
    converted = convert_state_dict(b0_state_dicts[source], source)
    assert {key: tuple(value.shape) for key, value in converted.items()} == {
        key: tuple(value.shape) for key, value in expected.items()}


def test_tensors_are_shared_not_copied(b0_state_dicts) -> None:
    peer = b0_state_dicts["torchvision"]
    converted = convert_state_dict(peer, "torchvision")
    assert converted["conv_stem.weight"].data_ptr() == peer["features.0.0.weight"].data_ptr()


def test_timm_depthwise_separable_blocks_become_unexpanded_mbconv(b0_state_dicts) -> None:
    peer = b0_state_dicts["timm"]
    converted = convert_state_dict(peer, "timm")
    assert converted["blocks.0.0.conv_pwl.weight"] is peer["blocks.0.0.conv_pw.weight"]
    assert converted["blocks.0.0.bn2.running_var"] is peer["blocks.0.0.bn1.running_var"]
    assert converted["blocks.0.0.bn3.running_var"] is peer["blocks.0.0.bn2.running_var"]
    assert "blocks.0.0.conv_pw.weight" not in converted
    assert converted["blocks.1.0.conv_pw.weight"] is peer["blocks.1.0.conv_pw.weight"]  # expanded: as is


def test_efficientnet_pytorch_flat_blocks_are_split_into_stages(b0_state_dicts) -> None:
    peer = b0_state_dicts["efficientnet_pytorch"]
    converted = convert_state_dict(peer, "efficientnet_pytorch")
    # b0's repeats 1, 2, 2, 3, 3, 4, 1: _blocks.3 opens stage 2, _blocks.15 is stage 6's only block.
    assert converted["blocks.2.0.conv_dw.weight"] is peer["_blocks.3._depthwise_conv.weight"]
    assert converted["blocks.6.0.conv_pwl.weight"] is peer["_blocks.15._project_conv.weight"]
    assert converted["blocks.0.0.bn3.weight"] is peer["_blocks.0._bn2.weight"]


def test_missing_batch_norm_counters_are_added(b0_state_dicts) -> None:
    peer = {key: value for key, value in b0_state_dicts["timm"].items() if "num_batches_tracked" not in key}
    converted = convert_state_dict(peer, "timm")
    model = effnet.create_model("efficientnet_b0")
    model.load_state_dict(converted, strict=True)
    assert int(converted["bn1.num_batches_tracked"]) == 0


def test_unknown_source_lists_the_known_ones(b0_state_dicts) -> None:
    with pytest.raises(WeightsError, match="unknown source 'caffe'.*timm, torchvision, efficientnet_pytorch, "
                                           "transformers, keras"):
        convert_state_dict(b0_state_dicts["timm"], "caffe")


@pytest.mark.parametrize("actual, stated", [(a, s) for a in SOURCES for s in SOURCES if a != s])
def test_a_state_dict_of_another_source_names_its_first_keys(actual, stated, b0_state_dicts) -> None:
    peer = b0_state_dicts[actual]
    first_key = next(iter(peer))
    with pytest.raises(WeightsError) as raised:
        convert_state_dict(peer, stated)
    message = str(raised.value)
    assert f"{stated}'s EfficientNet layout" in message
    assert f"{first_key} {tuple(peer[first_key].shape)}" in message
    assert f"pass source='{actual}'" in message


def test_an_empty_state_dict_is_refused() -> None:
    with pytest.raises(WeightsError, match="empty"):
        convert_state_dict({}, "timm")


def test_other_architectures_are_refused_not_half_converted() -> None:
    import timm
    import torchvision

    with pytest.raises(WeightsError, match=r"conv_head\.bias"):  # timm MobileNetV3: same block names
        convert_state_dict(timm.create_model("mobilenetv3_small_100").state_dict(), "timm")
    with pytest.raises(WeightsError, match=r"block features\.1\.0 has 1 convolution.*\(24, 24, 3, 3\)"):
        convert_state_dict(torchvision.models.efficientnet_v2_s().state_dict(), "torchvision")


def test_a_gap_in_efficientnet_pytorch_blocks_is_named(b0_state_dicts) -> None:
    peer = {key: value for key, value in b0_state_dicts["efficientnet_pytorch"].items()
            if not key.startswith("_blocks.4.")}
    expected = r"_blocks\.4 is absent.*_blocks\.5\._expand_conv\.weight \(240, 40, 1, 1\)"
    with pytest.raises(WeightsError, match=expected):
        convert_state_dict(peer, "efficientnet_pytorch")


# --- the peer table -------------------------------------------------------------------------

def test_every_row_names_a_registered_model_and_valid_overrides() -> None:
    models = set(effnet.list_models())
    for match in PEER_MATCHES:
        assert match.model_name in models, match
    assert {match.source for match in PEER_MATCHES} == set(SOURCES)
    assert len([match for match in PEER_MATCHES if match.source == "timm"]) == 30


def test_peer_model_rows() -> None:
    assert peer_model("timm", "tf_efficientnet_lite3") == ("tf_efficientnet_lite3", {})
    assert peer_model("torchvision", "efficientnet_b4") == ("efficientnet_b4", {})
    assert peer_model("torchvision", "efficientnet_b6") == (
        "efficientnet_b6", {"bn_eps": 1e-3, "bn_momentum": 0.01})
    assert peer_model("efficientnet_pytorch", "efficientnet-b3") == ("tf_efficientnet_b3", {})
    assert peer_model("transformers", "google/efficientnet-b7") == ("tf_efficientnet_b7", {})
    assert peer_model("keras", "EfficientNetB2") == ("tf_efficientnet_b2", {})


def test_peer_model_refuses_unknown_names() -> None:
    with pytest.raises(WeightsError, match="closest: efficientnet-b3"):
        peer_model("efficientnet_pytorch", "efficientnet_b3")
    with pytest.raises(WeightsError, match="known sources"):
        peer_model("caffe", "EfficientNetB0")


# --- convert_checkpoint ---------------------------------------------------------------------

def test_torchvision_checkpoint_end_to_end(tmp_path: Path) -> None:
    peer = build_peer("torchvision", "efficientnet_b0", (64, 64))
    peer.classifier[1] = torch.nn.Linear(1280, 10)  # a fine-tuned 10-class model
    torch.save(peer.state_dict(), tmp_path / "peer.pth")
    out = convert_checkpoint(tmp_path / "peer.pth", "torchvision", "efficientnet_b0",
                             tmp_path / "ours.safetensors")
    assert out == tmp_path / "ours.safetensors"
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata()["source"] == "torchvision"
        assert json.loads(handle.metadata()["spec"])["name"] == "efficientnet_b0"
    ours = effnet.create_model("efficientnet_b0", pretrained=out)
    assert ours.num_classes == 10
    images = _images(67, 45)
    assert relative_error(_logits(ours, images), _logits(peer, images)) <= 1e-5
    assert relative_error(_logits(effnet.create_model(out), images), _logits(peer, images)) <= 1e-5


def test_table_numerics_are_applied_to_torchvision_b5(tmp_path: Path) -> None:
    peer = build_peer("torchvision", "efficientnet_b5", (64, 64))
    torch.save({"model": peer.state_dict()}, tmp_path / "b5.pth")
    out = convert_checkpoint(tmp_path / "b5.pth", "torchvision", "efficientnet_b5", tmp_path / "b5.safetensors")
    ours = effnet.create_model("efficientnet_b5", pretrained=out)
    assert (ours.spec.bn_eps, ours.spec.bn_momentum) == (1e-3, 0.01)
    images = _images()
    assert relative_error(_logits(ours, images), _logits(peer, images)) <= 1e-5


def test_safetensors_ddp_and_headless_checkpoints(tmp_path: Path) -> None:
    import timm

    peer = timm.create_model("tf_efficientnet_b0", num_classes=0).eval()
    save_file({f"module.{key}": value for key, value in peer.state_dict().items()}, tmp_path / "peer.safetensors")
    out = convert_checkpoint(tmp_path / "peer.safetensors", "timm", "tf_efficientnet_b0",
                             tmp_path / "ours.safetensors")
    ours = effnet.create_model(out)
    images = _images()
    assert _logits(ours, images).shape == (2, 1280)
    assert relative_error(_logits(ours, images), _logits(peer, images)) <= 1e-5


def test_efficientnet_pytorch_weights_need_tf_numerics(tmp_path: Path, b0_state_dicts) -> None:
    torch.save(b0_state_dicts["efficientnet_pytorch"], tmp_path / "lm.pth")
    with pytest.raises(WeightsError, match="use one of tf_efficientnet_b0"):
        convert_checkpoint(tmp_path / "lm.pth", "efficientnet_pytorch", "efficientnet_b0",
                           tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    # Stating the numerics explicitly is the way to convert anyway.
    out = convert_checkpoint(tmp_path / "lm.pth", "efficientnet_pytorch", "efficientnet_b0",
                             tmp_path / "out.safetensors", padding="same", bn_eps=1e-3)
    assert effnet.create_model(out).spec.padding == "same"


def test_a_checkpoint_of_another_size_names_keys_and_shapes(tmp_path: Path) -> None:
    for name in ("efficientnet_b1", "efficientnet_b2"):
        torch.save(build_peer("timm", name, (64, 64)).state_dict(), tmp_path / f"{name}.pth")
    out = tmp_path / "out.safetensors"
    # b1 is deeper (more blocks), b2 also wider (other shapes) than b0.
    deeper = r"unexpected key\(s\): blocks\.0\.1\.conv_dw\.weight \(16, 1, 3, 3\)"
    with pytest.raises(WeightsError, match=deeper):
        convert_checkpoint(tmp_path / "efficientnet_b1.pth", "timm", "efficientnet_b0", out)
    wider = r"shape mismatch.*blocks\.2\.0\.conv_pwl\.weight: model \(40, 144, 1, 1\) vs weights \(48, 144, 1, 1\)"
    with pytest.raises(WeightsError, match=wider):
        convert_checkpoint(tmp_path / "efficientnet_b2.pth", "timm", "efficientnet_b0", out)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_truncated_checkpoint_is_refused(tmp_path: Path, b0_state_dicts) -> None:
    torch.save(b0_state_dicts["timm"], tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        convert_checkpoint(tmp_path / "cut.pth", "timm", "efficientnet_b0", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_file_that_is_no_checkpoint_is_called_so_not_refused_as_code(tmp_path: Path) -> None:
    (tmp_path / "notes.pth").write_text("# not a checkpoint\n")
    with pytest.raises(WeightsError, match=r"notes.pth: not a PyTorch checkpoint \(torch.load cannot unpickle"):
        read_checkpoint(tmp_path / "notes.pth")


def test_an_unknown_source_fails_before_reading(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="unknown source 'caffe'"):
        convert_checkpoint(tmp_path / "absent.pth", "caffe", "efficientnet_b0", tmp_path / "out.safetensors")


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    # The payload is live: plain unpickling does create its marker.
    control = tmp_path / "control_marker"
    write_hostile_checkpoint(tmp_path / "control.pth", control)
    torch.load(tmp_path / "control.pth", weights_only=False)
    assert control.exists()

    marker = tmp_path / "marker"
    hostile = write_hostile_checkpoint(tmp_path / "hostile.pth", marker)
    with pytest.raises(WeightsError, match="refused, loading it would run code .*GLOBAL"):
        read_checkpoint(hostile)
    with pytest.raises(WeightsError, match="refused"):
        convert_checkpoint(hostile, "timm", "efficientnet_b0", tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


# --- detection: source from the keys, model from the shapes -----------------------------------

@pytest.mark.parametrize("source, peer_name, expected", [
    ("torchvision", "efficientnet_b1", "efficientnet_b1"),
    ("efficientnet_pytorch", "efficientnet-b0", "tf_efficientnet_b0"),
    ("timm", "tf_efficientnet_lite0", None),  # ambiguous without a name: refused below
])
def test_detection_picks_source_and_model(source, peer_name, expected, tmp_path: Path) -> None:
    peer = build_peer(source, peer_name, (64, 64))
    torch.save(peer.state_dict(), tmp_path / "weights.pth")
    if expected is None:
        with pytest.raises(WeightsError, match="fits efficientnet_lite0 and tf_efficientnet_lite0 alike"):
            convert_file(tmp_path / "weights.pth", tmp_path / "out.safetensors")
        return
    result = convert_file(tmp_path / "weights.pth", tmp_path / "out.safetensors")
    assert (result.source, result.model_name, result.detected) == (source, expected, ("source", "model"))
    images = _images()
    assert relative_error(_logits(effnet.create_model(result.path), images), _logits(peer, images)) <= 1e-5


def test_timm_twins_are_told_apart_by_file_name_or_hub_config(tmp_path: Path) -> None:
    import timm
    from timm.models._hub import save_config_for_hf

    peer = build_peer("timm", "tf_efficientnet_b0", (64, 64))
    torch.save(peer.state_dict(), tmp_path / "tf_efficientnet_b0_aa-827b6e33.pth")  # timm's release name
    result = convert_file(tmp_path / "tf_efficientnet_b0_aa-827b6e33.pth", tmp_path / "named.safetensors")
    assert result.model_name == "tf_efficientnet_b0"
    # A timm hub folder: config.json names the architecture and holds the preprocessing.
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(peer.state_dict(), hub / "model.safetensors")
    save_config_for_hf(timm.create_model("efficientnet_b0", pretrained_cfg_overlay=dict(crop_pct=0.9)),
                       hub / "config.json")  # an efficientnet_b0 config: the folder says so
    result = convert_file(hub, tmp_path / "hub.safetensors")
    assert (result.source, result.model_name) == ("timm", "efficientnet_b0")
    config = effnet.create_model(result.path).data_config
    assert (config.crop_pct, config.interpolation, config.input_size) == (0.9, "bicubic", (3, 224, 224))


def test_convert_cli_detects_and_says_what_it_picked(tmp_path: Path, capsys) -> None:
    from effnet.cli import main

    torch.save(build_peer("torchvision", "efficientnet_b0", (64, 64)).state_dict(), tmp_path / "tv.pth")
    assert main(["convert", str(tmp_path / "tv.pth"), str(tmp_path / "tv.safetensors")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {tmp_path / 'tv.safetensors'} (efficientnet_b0, from torchvision; detected source and model)")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    assert main(["convert", str(tmp_path / "other.pth"), str(tmp_path / "other.safetensors")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith("effnet convert: error: the checkpoint has no known layout") and "fc.weight (2, 2)" in error
