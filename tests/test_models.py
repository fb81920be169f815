"""The model contract every variant shares."""
import re

import pytest
import torch
from torchvision.ops import StochasticDepth

import effnet
from effnet.errors import DownloadError, SpecError, UnknownModelError, WeightsError
from effnet.models import get_entry
from effnet.scaling import resolve
from effnet.weights import save_weights_file
from kernel_helpers import OpNames


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return effnet.create_model("efficientnet_b0").eval()


def test_list_models_has_the_family():
    names = effnet.list_models()
    for variant in [f"b{i}" for i in range(9)] + ["l2"] + [f"lite{i}" for i in range(5)]:
        assert f"efficientnet_{variant}" in names and f"tf_efficientnet_{variant}" in names
    assert effnet.list_models("tf_*lite*") == [f"tf_efficientnet_lite{i}" for i in range(5)]


def test_unknown_name_lists_closest():
    with pytest.raises(UnknownModelError, match="closest: efficientnet_b8"):
        effnet.create_model("efficientnet_b9")


def test_unknown_option_is_refused():
    with pytest.raises(SpecError, match="unknown option"):
        effnet.create_model("efficientnet_b0", bn_epsilon=1e-3)


def test_forward_features_head_and_pre_logits(b0):
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        features = b0.forward_features(x)
        assert features.shape == (2, 1280, 3, 3)
        assert b0.forward_head(features, pre_logits=True).shape == (2, 1280)
        assert torch.equal(b0.forward_head(features), b0(x))
    assert b0(x).shape == (2, 1000)


def test_spec_and_data_config(b0):
    assert b0.spec == get_entry("efficientnet_b0").spec
    config = get_entry("tf_efficientnet_b3").data_config
    assert config.input_size == (3, 300, 300) and config.crop_pct == pytest.approx(0.904, abs=1e-3)
    assert config["interpolation"] == "bicubic" and config.mean == (0.485, 0.456, 0.406)
    assert get_entry("tf_efficientnet_lite0").data_config.mean == (0.5, 0.5, 0.5)
    assert b0.data_config.input_size == (3, 224, 224)


def test_reset_classifier():
    model = effnet.create_model("efficientnet_lite0").eval()
    model.reset_classifier(5)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


def test_in_chans_and_num_classes():
    model = effnet.create_model("efficientnet_b0", in_chans=1, num_classes=10).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)
    assert model.data_config.input_size == (1, 224, 224)


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=4, drop_rate=0.0, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for expected, parameter in zip(reference, model.parameters()):
        torch.testing.assert_close(parameter.grad, expected, rtol=1e-4, atol=1e-6)


def test_features_only_channels_and_strides():
    model = effnet.create_model("efficientnet_b0", features_only=True).eval()
    assert [(info.channels, info.stride) for info in model.feature_info] == [
        (16, 2), (24, 4), (40, 8), (112, 16), (320, 32)]
    maps = model(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 48), (24, 16, 24), (40, 8, 12), (112, 4, 6), (320, 2, 3)]
    subset = effnet.create_model("tf_efficientnet_b3", features_only=True, out_indices=(1, 3)).eval()
    assert [info.stride for info in subset.feature_info] == [4, 16]
    assert len(subset(torch.randn(1, 3, 65, 67))) == 2


def test_stochastic_depth_schedule_and_placement():
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.2)
    plan = resolve(model.spec)
    blocks = [block for stage in model.blocks for block in stage]
    total = len(blocks)
    for index, (block, block_plan) in enumerate(zip(blocks, plan.blocks)):
        if block_plan.has_skip:
            assert isinstance(block.drop_path, StochasticDepth)
            assert block.drop_path.p == pytest.approx(0.2 * index / total)
            assert block.drop_path.mode == "row"  # per sample
        else:
            assert not isinstance(block.drop_path, StochasticDepth)


def test_drop_path_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=3, drop_rate=0.5, drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_tf_same_padding_output_sizes_on_odd_inputs():
    model = effnet.create_model("tf_efficientnet_b0", features_only=True).eval()
    maps = model(torch.randn(1, 3, 67, 45))
    # TF "same": ceil(n / stride) at every level.
    assert [tuple(m.shape[-2:]) for m in maps] == [(34, 23), (17, 12), (9, 6), (5, 3), (3, 2)]


def test_pretrained_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = effnet.create_model("efficientnet_b0", num_classes=3, bn_eps=1e-3).eval()
    path = save_weights_file(tmp_path / "model.safetensors", model.state_dict(), model.spec, model.data_config,
                             class_names=["cat", "dog", "eel"])
    loaded = effnet.create_model("efficientnet_b0", pretrained=path).eval()
    assert loaded.spec.bn_eps == 1e-3 and loaded.class_names == ["cat", "dog", "eel"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # Another class count keeps the trunk and starts a new head (fine-tuning).
    finetune = effnet.create_model("efficientnet_b0", pretrained=tmp_path, num_classes=7)
    assert finetune.classifier.out_features == 7 and finetune.class_names is None
    torch.testing.assert_close(finetune.conv_stem.weight, model.conv_stem.weight)
    features = effnet.create_model(path, features_only=True)
    torch.testing.assert_close(features.blocks[3][0].conv_dw.weight, model.blocks[3][0].conv_dw.weight)
    with pytest.raises(SpecError, match="holds efficientnet_b0 weights, not efficientnet_b1"):
        effnet.create_model("efficientnet_b1", pretrained=path)


def test_a_weights_file_that_cannot_be_written_is_one_weights_error_and_leaves_nothing(tmp_path):
    model = effnet.create_model("efficientnet_lite0", num_classes=2)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "taken.safetensors").mkdir()
    for path, reason in ((tmp_path / "a_file" / "w.safetensors", "a file stands where a folder of the path would be"),
                         (tmp_path / "taken.safetensors", "Is a directory")):
        with pytest.raises(WeightsError, match=f"cannot write {path}: {reason}"):
            save_weights_file(path, model.state_dict(), model.spec, model.data_config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "taken.safetensors"]  # no temporary left


def test_pretrained_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="not found"):
        effnet.create_model("efficientnet_b0", pretrained=tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 10)
    with pytest.raises(WeightsError, match="broken.safetensors"):
        effnet.create_model("efficientnet_b0", pretrained=broken)
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path / "cache"))  # published weights: an empty cache, offline
    with pytest.raises(DownloadError, match="downloads are off"):
        effnet.create_model("efficientnet_b0", pretrained=True)


@pytest.mark.parametrize("options, message", [
    ({"num_classes": -1}, "num_classes must be a whole number >= 0, got -1"),
    ({"num_classes": 2.5}, "num_classes must be a whole number >= 0, got 2.5"),
    ({"in_chans": 0}, "in_chans must be a whole number >= 1, got 0"),
])
def test_impossible_sizes_are_spec_errors(options, message):
    with pytest.raises(effnet.SpecError, match=re.escape(message)):
        effnet.create_model("efficientnet_b0", **options)
    with pytest.raises(effnet.SpecError, match="num_classes must be"):
        effnet.create_model("efficientnet_b0").reset_classifier(-3)


def test_silu_works_in_place_only_without_autograd():
    """In training an in-place SiLU would make PyTorch copy its input for the backward (a clone of every
    activation, no memory saved); without autograd it overwrites its input (one allocation fewer)."""
    model = effnet.create_model("efficientnet_b0", num_classes=10).train()
    x = torch.randn(2, 3, 32, 32)
    with OpNames() as ops:
        model(x).sum().backward()
    assert "clone" not in ops.names and "silu" in ops.names and "silu_" not in ops.names
    act = model.blocks[1][0].act1
    assert isinstance(act, torch.nn.SiLU) and act.inplace
    with torch.no_grad():
        y = torch.randn(4, 8)
        assert act(y) is y
    y = torch.randn(4, 8, requires_grad=True) * 1.0
    out = act(y)
    assert out is not y and torch.equal(out, torch.nn.functional.silu(y))
