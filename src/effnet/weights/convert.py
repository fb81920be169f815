"""Converters from peers' state dicts to effnet's key layout (filled in by the converters work)."""
from __future__ import annotations

from typing import Mapping

import torch

from effnet.errors import WeightsError

SOURCES: tuple[str, ...] = ()


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    raise WeightsError(f"unknown source {source!r}")
