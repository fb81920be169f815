"""Deterministic, stratified train/val splits by seed."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from effnet.data.errors import DataError


def check_val_fraction(val_fraction: float) -> float:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    return float(val_fraction)


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split sample indices into (train, val), each class in proportion, the same for the same seed.

    Per class, round(count * val_fraction) samples go to val, but at least one stays in train so
    every class can be learnt. numpy's PCG64 stream is stable across platforms and versions, so
    a seed names the same split everywhere.
    """
    check_val_fraction(val_fraction)
    labels = np.asarray(targets, dtype=np.int64)
    generator = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        count_val = min(int(round(len(members) * val_fraction)), len(members) - 1)
        val.extend(members[:count_val].tolist())
        train.extend(members[count_val:].tolist())
    return sorted(train), sorted(val)
