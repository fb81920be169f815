"""The paper's rounding rules, compound multipliers and spec validation."""
import math

import pytest

import effnet
from effnet.errors import SpecError
from effnet.models import get_entry
from effnet.scaling import resolve, round_channels, round_repeats, round_resolution, scale_by_multipliers
from effnet.spec import EFFICIENTNET_B0, StageSpec, spec_from_dict, spec_to_dict
from effnet.spec.types import NetworkSpec

# Golden table: (stem, [(channels, repeats) per stage], head), as the official code builds B0-B7.
GOLDEN = {
    "efficientnet_b0": (32, [(16, 1), (24, 2), (40, 2), (80, 3), (112, 3), (192, 4), (320, 1)], 1280),
    "efficientnet_b1": (32, [(16, 2), (24, 3), (40, 3), (80, 4), (112, 4), (192, 5), (320, 2)], 1280),
    "efficientnet_b2": (32, [(16, 2), (24, 3), (48, 3), (88, 4), (120, 4), (208, 5), (352, 2)], 1408),
    "efficientnet_b3": (40, [(24, 2), (32, 3), (48, 3), (96, 5), (136, 5), (232, 6), (384, 2)], 1536),
    "efficientnet_b4": (48, [(24, 2), (32, 4), (56, 4), (112, 6), (160, 6), (272, 8), (448, 2)], 1792),
    "efficientnet_b5": (48, [(24, 3), (40, 5), (64, 5), (128, 7), (176, 7), (304, 9), (512, 3)], 2048),
    "efficientnet_b6": (56, [(32, 3), (40, 6), (72, 6), (144, 8), (200, 8), (344, 11), (576, 3)], 2304),
    "efficientnet_b7": (64, [(32, 4), (48, 7), (80, 7), (160, 10), (224, 10), (384, 13), (640, 4)], 2560),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_family_golden_table(name):
    plan = resolve(get_entry(name).spec)
    stem, stages, head = GOLDEN[name]
    assert plan.stem_channels == stem
    assert [(stage[0].out_channels, len(stage)) for stage in plan.stages] == stages
    assert plan.head_channels == head


def test_lite_keeps_stem_head_and_first_last_depth():
    plan = resolve(get_entry("efficientnet_lite4").spec)
    assert plan.stem_channels == 32 and plan.head_channels == 1280
    assert len(plan.stages[0]) == 1 and len(plan.stages[-1]) == 1  # not scaled by depth 1.8
    assert len(plan.stages[1]) == math.ceil(2 * 1.8)
    assert all(block.se_channels == 0 for block in plan.blocks)


@pytest.mark.parametrize("value, expected", [(32, 32), (17.6, 16), (12.8, 16), (11, 16), (4, 8),
                                             (44.8, 48), (35.2, 32), (1.0, 8), (112 * 1.1, 120)])
def test_round_channels_matches_official_rule(value, expected):
    assert round_channels(value) == expected
    assert round_channels(value) >= 0.9 * value


def test_round_repeats_is_ceil():
    assert round_repeats(3, 1.1) == 4 and round_repeats(1, 1.0) == 1 and round_repeats(4, 3.1) == 13


def test_round_resolution():
    assert round_resolution(224 * 1.15) == 256 and round_resolution(260.0) == 260


def test_compound_multipliers():
    depth, width, resolution = effnet.compound_multipliers(2)
    assert (depth, width, resolution) == pytest.approx((1.44, 1.21, 1.3225))
    assert effnet.compound_multipliers(0) == (1.0, 1.0, 1.0)
    depth, width, resolution = effnet.compound_multipliers(-1.5, alpha=1.3, beta=1.2, gamma=1.1)
    assert depth == pytest.approx(1.3**-1.5) and width == pytest.approx(1.2**-1.5)
    # The paper's constraint: FLOPs about double per unit of phi.
    assert 1.2 * 1.1**2 * 1.15**2 == pytest.approx(1.92, abs=0.01)


def test_scale_by_phi_fractional_and_negative():
    small = effnet.scale_by_phi(EFFICIENTNET_B0, -1)
    large = effnet.scale_by_phi(EFFICIENTNET_B0, 1.5)
    assert small.resolution < 224 < large.resolution
    assert effnet.count_macs(small) < effnet.count_macs(EFFICIENTNET_B0) < effnet.count_macs(large)
    # Scaling composes on the multipliers, so rounding never compounds.
    twice = effnet.scale_by_phi(effnet.scale_by_phi(EFFICIENTNET_B0, 1), 1)
    once = effnet.scale_by_phi(EFFICIENTNET_B0, 2)
    assert resolve(twice).stages == resolve(once).stages


def test_model_from_scaled_spec():
    spec = effnet.scale_by_phi(EFFICIENTNET_B0, 0.5)
    model = effnet.create_model(spec, num_classes=7)
    assert model.spec == spec
    assert sum(p.numel() for p in model.parameters()) == effnet.count_params(spec, num_classes=7)


@pytest.mark.parametrize("make, field", [
    (lambda: StageSpec(out_channels=16, repeats=1, stride=3), "stride"),
    (lambda: StageSpec(out_channels=16, repeats=1, expand_ratio=0.5), "expand_ratio"),
    (lambda: StageSpec(out_channels=16, repeats=0), "repeats"),
    (lambda: NetworkSpec(name="x", stages=EFFICIENTNET_B0.stages, width=0), "width"),
    (lambda: NetworkSpec(name="x", stages=EFFICIENTNET_B0.stages, width=-1.0), "width"),
    (lambda: scale_by_multipliers(EFFICIENTNET_B0, width=0.05), "stages[0].out_channels"),
    (lambda: effnet.scale_by_phi(EFFICIENTNET_B0, -10, beta=1.5), "stem.out_channels"),
    (lambda: effnet.create_model("efficientnet_b0", padding="valid"), "padding"),
])
def test_bad_specs_raise_value_error_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make()


def test_spec_round_trips_through_dict():
    spec = get_entry("tf_efficientnet_lite3").spec
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_spec_from_dict_names_bad_field():
    data = spec_to_dict(EFFICIENTNET_B0)
    data["stages"][2]["stride"] = 3
    with pytest.raises(SpecError, match=r"stages\[2\]\.stride must be 1 or 2, got 3"):
        spec_from_dict(data)
    data = spec_to_dict(EFFICIENTNET_B0)
    data["stem"]["colour"] = 1
    with pytest.raises(SpecError, match="stem: unknown field"):
        spec_from_dict(data)


def test_absurd_scaling_is_an_error_not_hours_of_resolving(capsys):
    """phi 100 is depth 8e7: refused when the spec is made, before any block is resolved or counted."""
    from effnet.cli import main

    with pytest.raises(SpecError, match="width must be at most 100"):
        effnet.scale_by_phi(EFFICIENTNET_B0, 100)
    with pytest.raises(SpecError, match="depth must be at most 100, got 120"):
        effnet.scale_by_multipliers(EFFICIENTNET_B0, depth=120)
    with pytest.raises(SpecError, match="resolution must be at most 16384"):
        effnet.scale_by_multipliers(EFFICIENTNET_B0, resolution=100)
    assert main(["scale", "--phi", "100"]) == 2
    assert capsys.readouterr().err.strip() == "effnet scale: error: width must be at most 100, got 1.378e+04"
