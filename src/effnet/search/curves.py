"""The paper's Figure 3 / Table 3 on the user's data: scale one dimension, or all three, to matched MACs.

For each MACs multiple, each strategy gets the largest multiplier whose trunk (everything but the
classifier, whose size depends on the data) costs at most that multiple of the base's (costs are monotone
step functions of the multiplier, so a bisection finds it); then every network is trained the same way and
top-1 is plotted against measured MACs.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from effnet.errors import EffnetError, SpecError
from effnet.scaling.budget import largest_phi_within
from effnet.scaling.cost import spec_cost
from effnet.scaling.rules import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, scale_by_multipliers
from effnet.search.runner import RunRequest, run_all
from effnet.spec.types import NetworkSpec

STRATEGIES = ("width", "depth", "resolution", "compound")
FIELDS = ("strategy", "macs_multiple", "multiplier", "depth", "width", "resolution", "params", "macs",
          "macs_ratio", "top1", "ema_top1", "train_seconds", "status", "note")
# A point below this share of its MACs target says so: rounding kept the strategy from its budget.
SHORT_OF_TARGET = 0.75


@dataclass
class CurvesConfig:
    base: NetworkSpec  # at the resolution it trains at
    output: Path
    multiples: tuple[float, ...] = (2.0, 4.0)
    data: str = "builtin"
    epochs: int = 3
    seed: int = 0
    parallel: int = 1
    coefficients: tuple[float, float, float] = (PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA)
    train_args: list[str] = field(default_factory=list)


def _trunk_macs(spec: NetworkSpec) -> int:
    return spec_cost(spec, num_classes=0).macs


def _largest_multiplier(make: Callable[[float], NetworkSpec], budget: float, tolerance: float = 1e-3) -> float:
    low, high = 1.0, 2.0
    while _trunk_macs(make(high)) <= budget:
        low, high = high, high * 2
        if high > 1e3:
            raise SpecError(f"no multiplier reaches {budget:g} MACs")
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (middle, high) if _trunk_macs(make(middle)) <= budget else (low, middle)
    return low


def matched_specs(base: NetworkSpec, multiple: float,
                  coefficients: Sequence[float]) -> dict[str, tuple[float, NetworkSpec]]:
    """strategy -> (multiplier or phi, spec) with MACs at most `multiple` x the base's."""
    budget = multiple * _trunk_macs(base)
    makers = {
        "width": lambda x: scale_by_multipliers(base, width=x, name=f"{base.name}_w{x:.3f}"),
        "depth": lambda x: scale_by_multipliers(base, depth=x, name=f"{base.name}_d{x:.3f}"),
        "resolution": lambda x: scale_by_multipliers(base, resolution=x, name=f"{base.name}_r{x:.3f}"),
    }
    chosen = {}
    for strategy, make in makers.items():
        value = _largest_multiplier(make, budget)
        chosen[strategy] = (value, make(value))
    alpha, beta, gamma = coefficients
    fit = largest_phi_within(base, budget, _trunk_macs, alpha=alpha, beta=beta, gamma=gamma,
                             lowest=0.0, label="MACs")
    chosen["compound"] = (fit.phi, fit.spec)
    return chosen


def run_curves(config: CurvesConfig) -> list[dict[str, Any]]:
    from effnet.data import check_source

    check_source(config.data)  # before a training per point, each failing alike
    below = [multiple for multiple in config.multiples if not multiple > 1]
    if below:  # each strategy's multiplier is searched upwards from the base
        raise SpecError(f"MACs multiples must be above 1 (the curves scale the base up), got {below[0]:g}")
    base_macs = _trunk_macs(config.base)
    points = [("base", 1.0, 1.0, config.base)]
    for multiple in config.multiples:
        for strategy, (value, spec) in matched_specs(config.base, multiple, config.coefficients).items():
            points.append((strategy, multiple, value, spec))
    args = ["--data", config.data, "--epochs", str(config.epochs), "--seed", str(config.seed), "--json",
            *config.train_args]
    # A strategy that rounding leaves at an earlier point's network (resolution at small images,
    # often) is not trained again: it shares that point's run.
    first_of: dict[str, int] = {}
    requests = []
    for strategy, multiple, _, spec in points:
        key = repr(replace(spec, name=""))
        if key not in first_of:
            first_of[key] = len(requests)
            label = f"{strategy}_x{multiple:g}"
            requests.append(RunRequest(label, spec, config.output / "runs" / label, args))
    unique_results = run_all(requests, config.parallel)
    results = [unique_results[first_of[repr(replace(spec, name=""))]] for *_, spec in points]
    if all(result.summary is None for result in unique_results):
        raise EffnetError(f"every run failed; see {config.output}/runs/*/train.log (first: {results[0].error})")
    rows = []
    for (strategy, multiple, value, spec), result in zip(points, results):
        summary = result.summary or {}
        rows.append({
            "strategy": strategy, "macs_multiple": multiple, "multiplier": round(value, 4), "depth": spec.depth,
            "width": spec.width, "resolution": spec.resolution, "params": spec_cost(spec, num_classes=0).params,
            # The trained model's MACs as torch counts them (classifier included) when it trained.
            "macs": summary.get("macs_per_image", _trunk_macs(spec)),
            "macs_ratio": _trunk_macs(spec) / base_macs, "top1": summary.get("top1"),
            "ema_top1": summary.get("ema_top1"),
            "train_seconds": round(summary["wall_seconds"], 1) if "wall_seconds" in summary else None,
            "status": "reused" if result.reused else (result.error or "trained"),
            "note": _shortfall(strategy, multiple, _trunk_macs(spec) / base_macs),
        })
    config.output.mkdir(parents=True, exist_ok=True)
    with open(config.output / "curves.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (config.output / "curves.json").write_text(json.dumps(rows, indent=2))
    plot_curves(rows, config.output / "curves.png")
    return rows


def _shortfall(strategy: str, multiple: float, ratio: float) -> str:
    """Why a point sits well below its MACs target, or "" when it does not."""
    if strategy == "base" or ratio >= SHORT_OF_TARGET * multiple:
        return ""
    if ratio < 1.0 + 1e-9:
        return f"the same network as the base: the smallest step in {strategy} already costs more than {multiple:g}x"
    return (f"reaches only {ratio:.2f}x of {multiple:g}x: the next step (channels, repeats or, at small images, "
            f"the feature-map sizes) overshoots the budget")


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(row for row in rows if row["strategy"] == "base")
    # The final weights, and the moving average of weights the paper evaluates, side by side.
    metrics = [("top1", "final weights")]
    if any(row.get("ema_top1") is not None for row in rows):
        metrics.append(("ema_top1", "EMA of weights"))
    figure, panels = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    for axes, (metric, label) in zip(panels[0], metrics):
        for strategy in STRATEGIES:
            points = [base] + sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["macs"])
            points = [p for p in points if p.get(metric) is not None]
            axes.plot([p["macs"] / 1e6 for p in points], [p[metric] for p in points], marker="o", label=strategy)
        axes.set_xlabel("MACs (millions)")
        axes.set_ylabel("top-1 (%)")
        axes.set_title(f"evaluated with the {label}")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("scaling one dimension vs compound scaling")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
