"""Step 2 of the method: the largest phi within a budget."""
import json

import pytest

import effnet
from effnet.cli import main
from effnet.errors import SpecError
from effnet.models import get_entry
from effnet.scaling import spec_cost
from effnet.scaling.budget import largest_phi_within

B0 = get_entry("efficientnet_b0").spec


@pytest.mark.parametrize("budget", [0.2e9, 0.39e9, 0.7e9, 1.0e9, 1.8e9, 4.2e9, 10e9])
def test_max_macs_never_exceeded_and_within_ten_percent(budget, capsys):
    assert main(["scale", "--max-macs", str(budget), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["macs"] <= budget
    assert row["macs"] >= 0.9 * budget
    rebuilt = effnet.scale_by_phi(B0, row["phi"])  # what `effnet train --phi` builds
    assert spec_cost(rebuilt).macs == row["macs"]


def test_max_params_and_custom_coefficients(tmp_path, capsys):
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"chosen": {"alpha": 1.3, "beta": 1.05, "gamma": 1.1}}))
    spec_file = tmp_path / "spec.json"
    assert main(["scale", "--max-params", "12M", "--coefficients", str(search), "--save-spec", str(spec_file),
                 "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert 0.9 * 12e6 <= row["params"] <= 12e6
    spec = effnet.spec.spec_from_dict(json.loads(spec_file.read_text()))
    assert spec.depth == pytest.approx(1.3 ** row["phi"]) and effnet.count_params(spec) == row["params"]


def test_budget_below_the_smallest_model_is_a_clear_error():
    with pytest.raises(SpecError, match="no phi"):
        largest_phi_within(B0, 1e6, lambda spec: spec_cost(spec).macs, label="max-macs")


def test_max_latency_measures_on_the_device(capsys):
    from effnet.bench.latency import median_latency_ms

    budget = 3 * median_latency_ms(B0, repeats=5)  # B0 fits with room, whatever this machine's speed
    assert main(["scale", "--max-latency-ms", f"{budget:.3f}", "--repeats", "3", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["phi"] >= 0 and row["macs"] >= spec_cost(B0).macs


def test_max_latency_of_the_fast_path(capsys):
    """`--backend fast` times what `effnet predict --backend fast` runs (BN folded, fused blocks)."""
    from effnet.bench.latency import median_latency_ms

    budget = 3 * median_latency_ms(B0, repeats=5, backend="fast")
    assert main(["scale", "--max-latency-ms", f"{budget:.3f}", "--repeats", "3", "--backend", "fast", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["phi"] >= 0 and row["macs"] >= spec_cost(B0).macs
    assert main(["scale", "--max-macs", "1G", "--backend", "fast"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "effnet scale: error: --backend fast is for --max-latency-ms (the model it times)"
