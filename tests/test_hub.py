"""Published weights by name, on local caches only: nothing here reaches the network.

The caches are prepared as an earlier online run leaves them: the peer's file (random weights
here) where the resolver looks, with the SHA-256 that run recorded beside it. conftest sets
HF_HUB_OFFLINE=1, so a missing file must fail with the URL and the path, never a download.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision
from peers import build_peer, randomise, relative_error
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf
from transformers import EfficientNetImageProcessor

import effnet
from effnet.errors import DownloadError, WeightsError
from effnet.weights.hub import cache_dir, converted_path, download_url, set_cache_dir, sha256_of
from effnet.weights.published import DEFAULT_WEIGHTS, SCHEMES, resolve

_B0_V1 = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(_images())


def _record(path: Path) -> None:
    """What effnet writes beside a file it fetched and verified."""
    path.with_name(path.name + ".sha256").write_text(sha256_of(path) + "\n")


def _torchvision_file(cache: Path, peer: torch.nn.Module) -> Path:
    path = cache / "hub" / "torchvision" / _B0_V1.url.rsplit("/", 1)[-1]  # efficientnet_b0_rwightman-<hash>.pth
    path.parent.mkdir(parents=True)
    torch.save(peer.state_dict(), path)
    return path


# --- the table --------------------------------------------------------------------------------

def test_every_default_names_existing_peer_weights_of_its_model() -> None:
    tags = set(timm.list_pretrained())
    for model_name, pretrained in DEFAULT_WEIGHTS.items():
        assert model_name in effnet.list_models()
        reference = resolve(model_name, True)
        assert str(reference) == pretrained
        if reference.source == "timm":
            assert reference.name in tags, reference
        else:
            assert reference.source == "torchvision"
            torchvision.models.get_model_weights(reference.peer_name)[reference.name]


def test_references_resolve_to_the_models_own_peer() -> None:
    assert resolve("efficientnet_b3", "timm:ra2_in1k").name == "efficientnet_b3.ra2_in1k"
    assert resolve("tf_efficientnet_b3", "timm:tf_efficientnet_b3.ns_jft_in1k").peer_name == "tf_efficientnet_b3"
    assert resolve("efficientnet_b5", "torchvision:IMAGENET1K_V1").peer_name == "efficientnet_b5"
    assert resolve("tf_efficientnet_b0", "hf:google/efficientnet-b0").source == "transformers"
    assert set(SCHEMES) == {"timm", "torchvision", "hf"}
    with pytest.raises(WeightsError, match="holds tf_efficientnet_b3 weights, not efficientnet_b3"):
        resolve("efficientnet_b3", "timm:tf_efficientnet_b3.ns_jft_in1k")
    with pytest.raises(WeightsError, match="hf:google/efficientnet-b0 holds tf_efficientnet_b0 weights"):
        resolve("tf_efficientnet_b1", "hf:google/efficientnet-b0")
    with pytest.raises(WeightsError, match="no published weights are known for efficientnet_b8"):
        resolve("efficientnet_b8", True)


def test_cache_dir_precedence(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    set_cache_dir(tmp_path / "set")
    try:
        assert cache_dir() == tmp_path / "set"
    finally:
        set_cache_dir(None)
    monkeypatch.delenv("EFFNET_CACHE")
    assert cache_dir() == Path("~/.cache/effnet").expanduser()


# --- torchvision ------------------------------------------------------------------------------

def test_torchvision_weights_from_the_cache(cache) -> None:
    peer = build_peer("torchvision", "efficientnet_b0", (64, 64))
    _record(_torchvision_file(cache, peer))
    ours = effnet.create_model("efficientnet_b0", pretrained="torchvision:IMAGENET1K_V1")
    assert relative_error(_logits(ours), _logits(peer)) <= 1e-5
    config = ours.data_config  # torchvision's own transforms for these weights
    assert (config.input_size, config.crop_pct, config.interpolation) == ((3, 224, 224), 224 / 256, "bicubic")
    assert ours.class_names == _B0_V1.meta["categories"]
    # Converted once: later calls read the effnet file, the raw one is no longer needed.
    converted = converted_path(resolve("efficientnet_b0", "torchvision:IMAGENET1K_V1"))
    assert converted.is_file()
    next((cache / "hub" / "torchvision").glob("*.pth")).unlink()
    again = effnet.create_model("efficientnet_b0", pretrained="torchvision:IMAGENET1K_V1")
    assert torch.equal(_logits(again), _logits(ours))


def test_missing_file_offline_names_url_and_path(cache) -> None:
    path = cache / "hub" / "torchvision" / _B0_V1.url.rsplit("/", 1)[-1]
    with pytest.raises(DownloadError) as raised:
        effnet.create_model("efficientnet_b0", pretrained="torchvision:IMAGENET1K_V1")
    message = str(raised.value)
    assert "\n" not in message and "downloads are off" in message
    assert f"fetch {_B0_V1.url} to {path}" in message
    assert not path.exists()


def test_damaged_or_foreign_files_are_refused(cache) -> None:
    path = _torchvision_file(cache, build_peer("torchvision", "efficientnet_b0", (64, 64)))
    # Put there by hand: checked against the hash prefix in its name, which random weights miss.
    with pytest.raises(DownloadError, match=r"does not match the hash prefix in its name.*fetch https://"):
        effnet.create_model("efficientnet_b0", pretrained="torchvision:IMAGENET1K_V1")
    _record(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged after it was fetched
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="does not match the SHA-256 recorded when it was fetched"):
        effnet.create_model("efficientnet_b0", pretrained="torchvision:IMAGENET1K_V1")
    assert not converted_path(resolve("efficientnet_b0", "torchvision:IMAGENET1K_V1")).exists()


def test_download_checks_the_hash_prefix_in_the_file_name(tmp_path) -> None:
    source = tmp_path / "served.pth"
    source.write_bytes(b"some weights")
    prefix = sha256_of(source)[:8]
    path = download_url(source.as_uri(), tmp_path / f"weights-{prefix}.pth")  # a file:// URL: no network
    assert path.read_bytes() == b"some weights"
    with pytest.raises(DownloadError, match="invalid hash value"):
        download_url(source.as_uri(), tmp_path / "weights-0badbeef.pth")
    assert not (tmp_path / "weights-0badbeef.pth").exists()


# --- timm and transformers on the Hugging Face hub ---------------------------------------------

def test_timm_default_weights_from_the_cache(cache) -> None:
    peer = timm.create_model("efficientnet_b0.ra_in1k")  # the tag's pretrained_cfg, random weights
    randomise(peer, torch.Generator().manual_seed(0))
    folder = cache / "hub" / "timm" / "efficientnet_b0.ra_in1k"
    folder.mkdir(parents=True)
    save_file(peer.state_dict(), folder / "model.safetensors")
    save_config_for_hf(peer, folder / "config.json")  # as timm writes it to the hub
    _record(folder / "model.safetensors")
    ours = effnet.create_model("efficientnet_b0", pretrained=True)
    assert relative_error(_logits(ours), _logits(peer)) <= 1e-5
    assert (ours.data_config.crop_pct, ours.data_config.interpolation) == (0.875, "bicubic")
    assert len(ours.class_names) == 1000 and ours.class_names[0] == "tench"


def test_transformers_weights_from_the_cache(cache) -> None:
    peer = build_peer("transformers", "google/efficientnet-b0", (64, 64))
    folder = cache / "hub" / "hf" / "google" / "efficientnet-b0"
    peer.save_pretrained(folder)
    EfficientNetImageProcessor(size={"height": 224, "width": 224}, resample=0).save_pretrained(folder)
    ours = effnet.create_model("tf_efficientnet_b0", pretrained="hf:google/efficientnet-b0")
    with torch.no_grad():
        assert relative_error(_logits(ours), peer(pixel_values=_images()).logits) <= 1e-5
    assert (ours.data_config.crop_mode, ours.data_config.interpolation) == ("squash", "nearest-exact")


def test_small_hub_files_are_checked_by_their_git_blob_id(tmp_path) -> None:
    import shutil
    import subprocess

    from effnet.weights.hub import _git_blob_sha1

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path = tmp_path / "config.json"
    path.write_text('{"architecture": "efficientnet_b0"}\n')
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert _git_blob_sha1(path) == expected.stdout.strip()  # what the hub reports as a git file's ETag
