"""`run_search`: train every kept (alpha, beta, gamma) candidate the same way and pick the best."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.search.grid import DEFAULT_ALPHAS, DEFAULT_BETAS, DEFAULT_GAMMAS, Candidate, grid_candidates
from effnet.search.runner import RunRequest, run_all
from effnet.spec.types import NetworkSpec

TABLE_FIELDS = ("alpha", "beta", "gamma", "product", "macs_ratio", "params", "macs", "top1", "wall_seconds",
                "status")


@dataclass
class SearchConfig:
    base: NetworkSpec  # at the resolution it trains at
    output: Path
    data: str = "builtin"
    target: float = 2.0
    tolerance: float = 0.1
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    betas: tuple[float, ...] = DEFAULT_BETAS
    gammas: tuple[float, ...] = DEFAULT_GAMMAS
    epochs: int = 3
    minutes: float | None = None
    seed: int = 0
    parallel: int = 1
    gpus: tuple[str, ...] = ()
    ray_address: str | None = None
    train_args: list[str] = field(default_factory=list)


def _train_args(config: SearchConfig) -> list[str]:
    args = ["--data", config.data, "--epochs", str(config.epochs), "--seed", str(config.seed), "--json",
            *config.train_args]
    if config.minutes is not None:
        args += ["--time-limit-minutes", str(config.minutes)]
    return args


def _row(candidate: Candidate, result) -> dict[str, Any]:  # noqa: ANN001 - RunResult
    summary = result.summary or {}
    status = "reused" if result.reused else ("failed: " + result.error if result.error else "trained")
    return {**candidate.as_dict(), "top1": summary.get("top1"), "wall_seconds": round(result.wall_seconds, 2),
            "status": status, "run": str(result.output)}


def run_search(config: SearchConfig) -> dict[str, Any]:
    """The paper's step 1 on the user's data; writes search.json, search.csv and search.png."""
    from effnet.data import check_source

    check_source(config.data)  # before a training per candidate, each failing alike
    candidates = grid_candidates(config.base, config.alphas, config.betas, config.gammas, config.target,
                                 config.tolerance)
    requests = [RunRequest(c.key, c.spec, config.output / "candidates" / c.key, _train_args(config))
                for c in candidates]
    results = run_all(requests, config.parallel, config.gpus, config.ray_address)
    rows = [_row(candidate, result) for candidate, result in zip(candidates, results)]
    finished = [row for row in rows if row["top1"] is not None]
    if not finished:
        raise EffnetError(f"every candidate failed; see {config.output}/candidates/*/train.log "
                          f"(first: {rows[0]['status']})")
    best = max(finished, key=lambda row: (row["top1"], -row["macs_ratio"]))
    report = {
        "base": config.base.name, "data": config.data, "resolution": config.base.resolution,
        "target": config.target, "tolerance": config.tolerance, "epochs": config.epochs,
        "grid": {"alpha": list(config.alphas), "beta": list(config.betas), "gamma": list(config.gammas)},
        "note": "macs_ratio is measured on the rounded network; channel and repeat rounding move it away "
                "from alpha*beta^2*gamma^2 (product)",
        "candidates": rows,
        "chosen": {key: best[key] for key in ("alpha", "beta", "gamma", "top1", "macs_ratio")},
    }
    config.output.mkdir(parents=True, exist_ok=True)
    (config.output / "search.json").write_text(json.dumps(report, indent=2))
    with open(config.output / "search.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=TABLE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_search(rows, best, config.output / "search.png")
    return report


def plot_search(rows: list[dict[str, Any]], best: dict[str, Any], path: Path) -> None:
    """Top-1 of each candidate (labelled alpha/beta/gamma) against its measured MACs ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if row["top1"] is None:
            continue
        chosen = row is best
        axes.scatter(row["macs_ratio"], row["top1"], s=60 if chosen else 30, color="tab:red" if chosen else "tab:blue")
        axes.annotate(f"{row['alpha']:g}/{row['beta']:g}/{row['gamma']:g}", (row["macs_ratio"], row["top1"]),
                      fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("measured MACs ratio over the base")
    axes.set_ylabel("top-1 (%)")
    axes.set_title(f"compound-scaling search: chosen alpha/beta/gamma = "
                   f"{best['alpha']:g}/{best['beta']:g}/{best['gamma']:g}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
