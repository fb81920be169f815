"""Step 2 of the method: the largest compound coefficient phi whose model fits a budget.

Cost functions are passed in, so the search itself needs no torch: analytic MACs or parameters
from the cost model, or a latency measured on a device (`effnet.bench.latency`). Every rounding
rule is monotone in phi, so the cost is a non-decreasing step function of phi and a bisection
finds the boundary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from effnet.errors import SpecError
from effnet.scaling.rules import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, scale_by_phi
from effnet.spec.types import NetworkSpec

CostFunction = Callable[[NetworkSpec], float]


@dataclass(frozen=True)
class BudgetFit:
    phi: float
    spec: NetworkSpec
    cost: float
    budget: float


def largest_phi_within(base: NetworkSpec, budget: float, cost: CostFunction, *, alpha: float = PAPER_ALPHA,
                       beta: float = PAPER_BETA, gamma: float = PAPER_GAMMA, lowest: float = -4.0,
                       highest: float = 12.0, tolerance: float = 1e-3, label: str = "cost") -> BudgetFit:
    """The largest phi in [lowest, highest] with `cost(scale_by_phi(base, phi)) <= budget`."""
    if not budget > 0:
        raise SpecError(f"the {label} budget must be positive, got {budget}")

    def scaled(phi: float) -> NetworkSpec:
        return scale_by_phi(base, phi, alpha, beta, gamma)

    low_cost = cost(scaled(lowest))
    if low_cost > budget:
        raise SpecError(f"no phi >= {lowest:g} fits {label} <= {budget:g}: the smallest model tried "
                        f"(phi {lowest:g}) already costs {low_cost:g}")
    # Bracket upwards one unit of phi at a time: probing a huge model first would be slow to
    # build and, for a measured latency, slow to time.
    low, high = lowest, max(lowest + 1.0, 0.0)
    while cost(scaled(high)) <= budget:
        low, high = high, high + 1.0
        if high > highest:
            raise SpecError(f"{label} <= {budget:g} admits every phi up to {highest:g}; the budget is too large")
    while high - low > tolerance:
        middle = (low + high) / 2
        if cost(scaled(middle)) <= budget:
            low = middle
        else:
            high = middle
    # A phi with few decimals, at or below the boundary, so `effnet train --phi` rebuilds this model.
    phi = max(lowest, math.floor(low / tolerance) * tolerance)
    phi = round(phi, 6)
    spec = scaled(phi)
    return BudgetFit(phi, spec, cost(spec), budget)
