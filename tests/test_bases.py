"""Other base networks in the spec language (the paper's Table 3): MobileNetV1, MobileNetV2, ResNet-50.

MobileNetV2 and ResNet-50 must be torchvision's models exactly: a randomly initialised
torchvision model (randomised BN statistics) converted into ours gives the same logits.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from peers import build_peer, parameter_count, randomise, relative_error
from torch.utils.flop_counter import FlopCounterMode

import effnet
from effnet.cli import main
from effnet.errors import SpecError, WeightsError
from effnet.models import get_entry
from effnet.scaling import resolve, round_channels, round_repeats, scale_by_multipliers, spec_cost
from effnet.spec import spec_from_dict, spec_to_dict
from effnet.spec.classic import MOBILENET_V1, MOBILENET_V2, RESNET_50
from effnet.spec.types import StageSpec, StemSpec
from effnet.weights.convert import convert_state_dict, peer_model

TOLERANCE = 1e-5
BASES = ("mobilenet_v1", "mobilenet_v2", "resnet50")


def _assert_same_logits(ours: torch.nn.Module, peer: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in ((2, 64, 64), (1, 67, 45)):
        images = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected, actual = peer(images), ours(images)
        assert expected.shape == actual.shape == (batch, 1000)
        assert expected.std() > 1e-3  # a comparison worth making
        assert relative_error(actual, expected) <= TOLERANCE, f"{height}x{width}"


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_converted_torchvision_model_gives_the_same_logits(name):
    peer = build_peer("torchvision", name, (64, 64))
    model_name, overrides = peer_model("torchvision", name)
    ours = effnet.create_model(model_name, **overrides).eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), "torchvision"), strict=True)
    assert parameter_count(ours) == parameter_count(peer) == effnet.count_params(ours.spec)
    _assert_same_logits(ours, peer)


def test_width_scaled_mobilenet_v2_is_torchvisions_width_mult():
    """Our width multiplier (divisor-8 rounding, head kept at 1280 below width 1) is torchvision's."""
    torch.manual_seed(0)
    peer = torchvision.models.mobilenet_v2(width_mult=0.5)
    randomise(peer, torch.Generator().manual_seed(0))
    peer.eval()
    ours = effnet.create_model(scale_by_multipliers(MOBILENET_V2, width=0.5)).eval()
    ours.load_state_dict(convert_state_dict(peer.state_dict(), "torchvision"), strict=True)
    assert parameter_count(ours) == parameter_count(peer)
    _assert_same_logits(ours, peer)


def test_converter_places_blocks_and_refuses_basic_block_resnets():
    peer = torchvision.models.mobilenet_v2().state_dict()
    converted = convert_state_dict(peer, "torchvision")
    # repeats 1, 2, 3, 4, 3, 3, 1: features.4 opens stage 2, features.17 is stage 6's only block.
    assert converted["blocks.2.0.conv_dw.weight"] is peer["features.4.conv.1.0.weight"]
    assert converted["blocks.6.0.bn3.running_var"] is peer["features.17.conv.3.running_var"]
    assert converted["blocks.0.0.conv_pwl.weight"] is peer["features.1.conv.1.weight"]
    resnet = torchvision.models.resnet50().state_dict()
    converted = convert_state_dict(resnet, "torchvision")
    assert converted["blocks.1.0.conv_shortcut.weight"] is resnet["layer2.0.downsample.0.weight"]
    assert converted["blocks.3.2.bn3.weight"] is resnet["layer4.2.bn3.weight"]
    with pytest.raises(WeightsError, match=r"ResNet layout: block layer1\.0 has no conv3.*BasicBlock"):
        convert_state_dict(torchvision.models.resnet18().state_dict(), "torchvision")
    with pytest.raises(WeightsError, match="looks like a 'torchvision' state dict"):
        convert_state_dict(resnet, "timm")


def test_mobilenet_v1_matches_the_paper():
    """MobileNetV1 paper, Table 8: 4.2M parameters and 569M multiply-adds at 224."""
    cost = spec_cost(MOBILENET_V1)
    assert cost.params / 1e6 == pytest.approx(4.2, abs=0.05)
    assert cost.macs / 1e6 == pytest.approx(569, rel=0.01)
    model = effnet.create_model("mobilenet_v1", num_classes=10).eval()
    assert parameter_count(model) == effnet.count_params(MOBILENET_V1, num_classes=10)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 1024, 2, 2)
    assert not hasattr(model.blocks[0][0], "drop_path")  # no residuals at all


def test_resnet50_stem_pool_head_and_features():
    model = effnet.create_model("resnet50", features_only=True).eval()
    assert [(info.channels, info.stride) for info in model.feature_info] == [
        (256, 4), (512, 8), (1024, 16), (2048, 32)]
    maps = model(torch.randn(1, 3, 67, 45))
    assert [tuple(m.shape[-2:]) for m in maps] == [(17, 12), (9, 6), (5, 3), (3, 2)]
    classifier = effnet.create_model("resnet50", num_classes=0)
    assert classifier.num_features == 2048 and isinstance(classifier.conv_head, torch.nn.Identity)


def _measured_macs(model: torch.nn.Module, height: int, width: int) -> int:
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, height, width))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", BASES)
@pytest.mark.parametrize("phi", [-1.0, 1.5])
def test_scale_by_phi_scales_every_base(name, phi):
    base = get_entry(name).spec
    scaled = effnet.scale_by_phi(base, phi)
    depth, width, _ = effnet.compound_multipliers(phi)
    plan, base_plan = resolve(scaled), resolve(base)
    assert plan.stem_channels == round_channels(base.stem.out_channels * width)
    for stage, blocks in zip(base.stages, plan.stages):
        assert blocks[0].out_channels == round_channels(stage.out_channels * width)
        assert blocks[0].out_channels % 8 == 0
        assert len(blocks) == round_repeats(stage.repeats, depth)
    assert (plan.head_channels > base_plan.head_channels) == (phi > 0 and base.head.out_channels > 0)
    # Params exact and MACs equal to torch's FLOP counter, for the scaled network too.
    with torch.device("meta"):
        model = effnet.create_model(scaled)
    assert parameter_count(model) == effnet.count_params(scaled)
    for height, width in ((64, 64), (67, 45)):
        assert spec_cost(scaled, (height, width)).macs == _measured_macs(model, height, width)


def test_resnet_trains_with_drop_path_on_identity_blocks_only():
    torch.manual_seed(0)
    model = effnet.create_model("resnet50", num_classes=3, drop_path_rate=0.2)
    rates = [getattr(block.drop_path, "p", 0.0) for stage in model.blocks for block in stage]
    assert rates[0] == 0.0 and rates[1] > 0.0  # the first block projects its input
    model.set_grad_checkpointing()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.conv_stem.weight.grad is not None


def test_new_spec_fields_validate_and_round_trip():
    with pytest.raises(SpecError, match="se_ratio applies only to mbconv"):
        StageSpec(out_channels=64, repeats=1, block="bottleneck")
    with pytest.raises(SpecError, match="dsconv stage does not expand"):
        StageSpec(out_channels=64, repeats=1, expand_ratio=6, se_ratio=0, block="dsconv")
    with pytest.raises(SpecError, match="pool must be one of none, max"):
        StemSpec(pool="avg")
    assert spec_from_dict(spec_to_dict(RESNET_50)) == RESNET_50
    legacy = spec_to_dict(get_entry("efficientnet_b0").spec)
    del legacy["stem"]["pool"], legacy["scaling"]["shrink_head"]  # files written before these fields
    assert spec_from_dict(legacy) == get_entry("efficientnet_b0").spec


def test_info_names_the_blocks(capsys):
    assert main(["info", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "Bottleneck4" in out and "max pool" in out and "conv1x1" not in out
    assert main(["info", "mobilenet_v1"]) == 0
    assert "DSConv" in capsys.readouterr().out
