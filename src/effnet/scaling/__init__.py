"""Scaling: pure rounding rules, compound multipliers, the resolved plan and the cost model."""
from effnet.scaling.cost import Cost, count_macs, count_params, spec_cost
from effnet.scaling.plan import BlockPlan, FeatureTap, NetworkPlan, resolve
from effnet.scaling.rules import (
    PAPER_ALPHA,
    PAPER_BETA,
    PAPER_GAMMA,
    compound_multipliers,
    round_channels,
    round_repeats,
    round_resolution,
    scale_by_multipliers,
    scale_by_phi,
)

__all__ = [
    "Cost", "count_macs", "count_params", "spec_cost",
    "BlockPlan", "FeatureTap", "NetworkPlan", "resolve",
    "PAPER_ALPHA", "PAPER_BETA", "PAPER_GAMMA", "compound_multipliers", "round_channels",
    "round_repeats", "round_resolution", "scale_by_multipliers", "scale_by_phi",
]
