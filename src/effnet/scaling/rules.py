"""The paper's scaling rules as small pure functions (no torch)."""
from __future__ import annotations

import math
from dataclasses import replace

from effnet.errors import SpecError
from effnet.spec.types import NetworkSpec

# The paper's grid-search result on B0 (section 3.3): alpha * beta**2 * gamma**2 ~= 2.
PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA = 1.2, 1.1, 1.15
RESOLUTION_DIVISOR = 4  # every official resolution (224 ... 800) is a multiple of 4


def round_channels(channels: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round to a multiple of `divisor`, at least `divisor`, never more than 10% below.

    The official code's `round_filters`: `max(d, int(c + d/2) // d * d)`, plus `d` if that fell
    below `round_limit * c`.
    """
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < round_limit * channels:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks in a stage after depth scaling: `ceil(depth * repeats)` as in the official code."""
    return int(math.ceil(depth * repeats))


def round_resolution(resolution: float, divisor: int = RESOLUTION_DIVISOR) -> int:
    """Nearest multiple of `divisor` (at least one `divisor`)."""
    return max(divisor, int(round(resolution / divisor)) * divisor)


def compound_multipliers(
    phi: float,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers `alpha**phi, beta**phi, gamma**phi` (eq. 3).

    FLOPs grow by about `(alpha * beta**2 * gamma**2) ** phi`. Fractional and negative `phi` work.
    """
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value > 0:
            raise SpecError(f"{label} must be positive, got {value}")
    if not math.isfinite(phi):
        raise SpecError(f"phi must be a finite number, got {phi}")
    try:
        return alpha**phi, beta**phi, gamma**phi
    except OverflowError:  # float ** float raises where it would pass 1.8e308
        raise SpecError(f"phi {phi:g} scales past any network: alpha, beta or gamma to its power overflows") from None


def scale_by_multipliers(
    spec: NetworkSpec,
    depth: float = 1.0,
    width: float = 1.0,
    resolution: float = 1.0,
    name: str | None = None,
) -> NetworkSpec:
    """`spec` with its depth and width multiplied and its resolution scaled and rounded."""
    for label, value in (("depth", depth), ("width", width), ("resolution", resolution)):
        if not value > 0:
            raise SpecError(f"{label} multiplier must be positive, got {value}")
    scaled = replace(
        spec,
        name=name or spec.name,
        depth=spec.depth * depth,
        width=spec.width * width,
        resolution=round_resolution(spec.resolution * resolution),
    )
    from effnet.scaling.plan import resolve  # validates that no stage rounds to nothing

    resolve(scaled)
    return scaled


def scale_by_phi(
    spec: NetworkSpec,
    phi: float,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    gamma: float = PAPER_GAMMA,
    name: str | None = None,
) -> NetworkSpec:
    """Compound scaling of `spec` by `phi` with the given coefficients."""
    depth, width, resolution = compound_multipliers(phi, alpha, beta, gamma)
    return scale_by_multipliers(spec, depth, width, resolution, name=name or f"{spec.name}_phi{phi:g}")
