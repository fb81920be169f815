"""A reproducible DataLoader factory.

Order and augmentation are reproducible for a given seed and worker count: the sampler's shuffle
draws from a generator seeded with `seed`; each worker's torch seed is derived from it by
PyTorch (base seed + worker id), and `seed_worker` seeds Python's `random` and numpy from that,
which PyTorch does not do. With `workers=0` augmentation draws from the global torch RNG, which
the caller seeds (e.g. `torch.manual_seed`).
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from effnet.data.errors import DataError

NUMPY_SEED_MODULUS = 2**32  # numpy seeds must fit in 32 bits


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seed `random` and numpy from the per-worker torch seed PyTorch already set."""
    worker_seed = torch.initial_seed() % NUMPY_SEED_MODULUS
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, workers: int = 0, seed: int = 0,
                sampler: Sampler | None = None, drop_last: bool = False, *, pin_memory: bool | None = None,
                prefetch_factor: int | None = None) -> DataLoader:
    """A DataLoader with a seeded generator, seeded workers, and worker processes kept alive.

    `pin_memory` defaults to True when there are workers and a CUDA device, where page-locked
    batches make the host-to-device copy asynchronous; without CUDA it would only cost memory.
    A `sampler` (e.g. DistributedSampler) owns the order, so it excludes `shuffle=True`.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise DataError(f"workers must be 0 or more, got {workers}")
    if sampler is not None and shuffle:
        raise DataError("shuffle=True and a sampler exclude each other: let the sampler shuffle "
                        "(e.g. DistributedSampler(dataset, shuffle=True, seed=seed))")
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise DataError("cannot load batches from an empty data set")
    if pin_memory is None:
        pin_memory = workers > 0 and torch.cuda.is_available()
    generator = torch.Generator()
    generator.manual_seed(seed)
    options = {}
    if workers > 0:
        # Persistent workers skip re-forking (and re-importing) every epoch.
        options = {"persistent_workers": True, "worker_init_fn": seed_worker, "prefetch_factor": prefetch_factor}
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, generator=generator, **options)
