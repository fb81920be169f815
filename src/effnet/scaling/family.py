"""Family tables: the official B0-B7 rows, or compound scaling of a base by any phi values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from effnet.scaling.cost import spec_cost
from effnet.scaling.rules import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, scale_by_phi
from effnet.spec.efficientnet import EFFICIENTNET_B0, EFFICIENTNET_ROWS, apply_row
from effnet.spec.types import NetworkSpec


@dataclass(frozen=True)
class FamilyMember:
    name: str
    phi: float
    depth: float
    width: float
    resolution: int
    params: int
    macs: int
    spec: NetworkSpec

    def as_dict(self) -> dict:
        return {"name": self.name, "phi": self.phi, "depth": self.depth, "width": self.width,
                "resolution": self.resolution, "params": self.params, "macs": self.macs}


def _member(spec: NetworkSpec, phi: float, num_classes: int) -> FamilyMember:
    cost = spec_cost(spec, num_classes=num_classes)
    return FamilyMember(spec.name, phi, spec.depth, spec.width, spec.resolution, cost.params, cost.macs, spec)


def official_family(count: int = 8, num_classes: int = 1000) -> list[FamilyMember]:
    """B0 ... B(count-1) as released: hand-picked rows, not exactly alpha**phi, beta**phi, gamma**phi."""
    rows = EFFICIENTNET_ROWS[:count]
    return [_member(apply_row(EFFICIENTNET_B0, row, f"efficientnet_{row.name}"), index, num_classes)
            for index, row in enumerate(rows)]


def compound_family(phis: Iterable[float], base: NetworkSpec = EFFICIENTNET_B0, alpha: float = PAPER_ALPHA,
                    beta: float = PAPER_BETA, gamma: float = PAPER_GAMMA,
                    num_classes: int = 1000) -> list[FamilyMember]:
    """`base` scaled by d = alpha**phi, w = beta**phi, r = gamma**phi for each phi."""
    return [_member(scale_by_phi(base, phi, alpha, beta, gamma), phi, num_classes) for phi in phis]
