"""Parity with the peers, the project's core promise: a converted peer model gives the same logits.

Every PyTorch peer model in `PEER_MATCHES` (timm's 30, torchvision's b0..b7, EfficientNet-PyTorch's
b0..b8 and l2, transformers' google/efficientnet-b0..b7) is built with random weights and randomised
BatchNorm statistics, converted by key/shape alone, loaded strictly into the effnet model the table
names, and compared in float32 eval mode on a square and an odd, non-square input (the latter
exercises TF "same" padding's asymmetric pad on every strided layer). transformers pads for its
configured size's parity only, so it is compared on the square input. Keras' rows are held to
Keras' own forward in test_convert_keras.py.
"""
from __future__ import annotations

import gc

import pytest
import torch
from peers import BUILDERS, build_peer, parameter_count, relative_error

import effnet
from effnet.weights.convert import PEER_MATCHES, convert_state_dict, peer_model

TOLERANCE = 1e-5

# (batch, height, width): a square input, then an odd non-square one. L2 (~480M parameters) gets
# the smallest inputs that still put odd sizes in front of its strided layers.
_INPUTS = ((2, 64, 64), (1, 67, 45))
_L2_INPUTS = ((1, 32, 32), (1, 35, 33))
CASES = [match for match in PEER_MATCHES if match.source in BUILDERS]


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    gc.collect()


def _peer_for_size(source: str, name: str, peer: torch.nn.Module,
                   image_size: tuple[int, int]) -> torch.nn.Module:
    """EfficientNet-PyTorch fixes its padding for one image size: rebuild it with the same weights."""
    if source != "efficientnet_pytorch":
        return peer
    resized = build_peer(source, name, image_size)
    resized.load_state_dict(peer.state_dict(), strict=True)
    return resized


@pytest.mark.parametrize("match", CASES, ids=[f"{m.source}-{m.peer_name}" for m in CASES])
def test_converted_peer_gives_the_same_logits(match) -> None:
    inputs = _L2_INPUTS if match.peer_name.endswith(("_l2", "-l2")) else _INPUTS
    if match.source == "transformers":
        inputs = inputs[:1]
    first_size = inputs[0][1:]
    peer = build_peer(match.source, match.peer_name, first_size)
    model_name, overrides = peer_model(match.source, match.peer_name)
    ours = effnet.create_model(model_name, **overrides).eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), match.source), strict=True)

    assert parameter_count(ours) == parameter_count(peer)
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in inputs:
        peer = _peer_for_size(match.source, match.peer_name, peer, (height, width))
        images = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = peer(images)
            expected = getattr(expected, "logits", expected)  # transformers returns an output object
            actual = ours(images)
        assert expected.shape == actual.shape == (batch, 1000)
        assert torch.isfinite(expected).all() and expected.std() > 1e-3  # a comparison worth making
        error = relative_error(actual, expected)
        where = f"{model_name} vs {match.source} {match.peer_name} on {height}x{width}"
        assert error <= TOLERANCE, f"{where}: relative error {error:.2e}"


def test_parity_is_sensitive_to_batch_norm_eps() -> None:
    """Without the table's bn_eps=1e-3, torchvision's b5 differs well beyond the tolerance."""
    peer = build_peer("torchvision", "efficientnet_b5", (64, 64))
    ours = effnet.create_model("efficientnet_b5").eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), "torchvision"), strict=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(ours(images), peer(images)) > 100 * TOLERANCE


def test_efficientnet_pytorch_static_padding_is_only_right_for_its_image_size() -> None:
    """The peer quirk behind building it per input size: its default padding is fixed for 224x224."""
    peer = build_peer("efficientnet_pytorch", "efficientnet-b0", (224, 224))
    ours = effnet.create_model("tf_efficientnet_b0").eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), "efficientnet_pytorch"), strict=True)
    images = torch.randn(1, 3, 67, 45, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(ours(images), peer(images)) > 100 * TOLERANCE
