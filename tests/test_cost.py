"""The analytic cost model against built models, torch's FLOP counter and the paper's Table 2."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import effnet
from effnet.models import get_entry
from effnet.scaling import spec_cost

# Paper Table 2: params (millions) and FLOPs (billions of multiply-adds).
PAPER = {"b0": (5.3, 0.39), "b1": (7.8, 0.70), "b2": (9.2, 1.0), "b3": (12, 1.8),
         "b4": (19, 4.2), "b5": (30, 9.9), "b6": (43, 19), "b7": (66, 37)}


def _measured_macs(model: torch.nn.Module, height: int, width: int) -> int:
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, height, width))
    counts = counter.get_flop_counts()["Global"]
    assert set(map(str, counts)) <= {"aten.convolution", "aten.addmm", "aten.mm"}
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-accumulate


@pytest.mark.parametrize("name", effnet.list_models())
def test_params_exact_and_macs_match_flop_counter(name):
    spec = get_entry(name).spec
    with torch.device("meta"):
        model = effnet.create_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) == effnet.count_params(spec)
    for height, width in ((spec.resolution, spec.resolution), (97, 131)):
        analytic = spec_cost(spec, (height, width)).macs
        assert abs(analytic - _measured_macs(model, height, width)) <= 0.01 * analytic


def test_cost_with_other_heads_and_inputs():
    spec = get_entry("efficientnet_b2").spec
    with torch.device("meta"):
        model = effnet.create_model("efficientnet_b2", num_classes=10, in_chans=1)
    assert sum(p.numel() for p in model.parameters()) == effnet.count_params(spec, num_classes=10, in_channels=1)


@pytest.mark.parametrize("variant", sorted(PAPER))
def test_family_within_five_percent_of_paper_table(variant):
    params, flops = PAPER[variant]
    cost = spec_cost(get_entry(f"efficientnet_{variant}").spec)
    assert cost.params / 1e6 == pytest.approx(params, rel=0.05)
    assert cost.macs / 1e9 == pytest.approx(flops, rel=0.05)
