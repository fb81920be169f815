"""Step 1 of the method: the grid of (alpha, beta, gamma) candidates at phi = 1.

Pure functions (no torch). A candidate is kept only where the *measured* MACs ratio of the scaled
network over the base is within `tolerance` of the target: channel and repeat rounding move the
real cost away from alpha * beta**2 * gamma**2, so the product alone is not trusted.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

from effnet.errors import SpecError
from effnet.scaling.cost import spec_cost
from effnet.scaling.plan import resolve
from effnet.scaling.rules import scale_by_multipliers
from effnet.spec.types import NetworkSpec

DEFAULT_ALPHAS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)
DEFAULT_BETAS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.4)
DEFAULT_GAMMAS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.4)


@dataclass(frozen=True)
class Candidate:
    alpha: float
    beta: float
    gamma: float
    product: float  # alpha * beta**2 * gamma**2, the paper's FLOPs estimate
    macs_ratio: float  # measured: MACs(scaled) / MACs(base)
    params: int
    macs: int
    spec: NetworkSpec
    aliases: tuple[tuple[float, float, float], ...] = ()  # grid points that round to this same network

    @property
    def key(self) -> str:
        return f"a{self.alpha:g}_b{self.beta:g}_g{self.gamma:g}"

    def as_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "product": self.product,
                "macs_ratio": self.macs_ratio, "params": self.params, "macs": self.macs,
                "same_network_as": [list(alias) for alias in self.aliases]}


def parse_values(text: str) -> tuple[float, ...]:
    """`1.0,1.1,1.2` or a range `1.0:1.4:0.1` (inclusive)."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            return tuple(round(start + index * step, 6) for index in range(count))
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SpecError(f"expected a list like 1.0,1.1,1.2 or a range like 1.0:1.4:0.1, got {text!r}") from None


def grid_candidates(base: NetworkSpec, alphas: Sequence[float] = DEFAULT_ALPHAS,
                    betas: Sequence[float] = DEFAULT_BETAS, gammas: Sequence[float] = DEFAULT_GAMMAS,
                    target: float = 2.0, tolerance: float = 0.1) -> list[Candidate]:
    """Every grid point whose measured MACs ratio is within `tolerance` (relative) of `target`.

    The base's `resolution` is the size it trains at; gamma scales it (to a multiple of 4).
    """
    for label, values in (("alpha", alphas), ("beta", betas), ("gamma", gammas)):
        if not values or min(values) < 1:
            raise SpecError(f"{label} values must be >= 1 (phi = 1 scales the base up), got {list(values)}")
    if not tolerance > 0:
        raise SpecError(f"tolerance must be positive (a fraction of the target), got {tolerance:g}")
    base_macs = spec_cost(base).macs
    # Grid points that round to the same network (depth 1.1 and 1.2 both make B0's repeats
    # 2, 3, 3, 4, 4, 5, 2) are trained once; the others are listed as its aliases.
    groups: dict[tuple, list[tuple[float, float, float, NetworkSpec]]] = {}
    for alpha, beta, gamma in itertools.product(alphas, betas, gammas):
        spec = scale_by_multipliers(base, depth=alpha, width=beta, resolution=gamma,
                                    name=f"{base.name}_a{alpha:g}_b{beta:g}_g{gamma:g}")
        groups.setdefault((spec.resolution, resolve(spec).stages), []).append((alpha, beta, gamma, spec))
    kept = []
    for (alpha, beta, gamma, spec), *others in groups.values():
        cost = spec_cost(spec)
        ratio = cost.macs / base_macs
        if abs(ratio - target) <= tolerance * target:
            aliases = tuple((a, b, g) for a, b, g, _ in others)
            kept.append(Candidate(alpha, beta, gamma, alpha * beta**2 * gamma**2, ratio, cost.params, cost.macs,
                                  spec, aliases))
    if not kept:
        raise SpecError(f"no grid point has a MACs ratio within {tolerance:.0%} of {target:g}; widen the grid "
                        "or the tolerance")
    return kept
