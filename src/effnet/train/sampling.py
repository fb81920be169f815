"""Deterministic, resumable, rank-sharded sampling and per-sample augmentation seeds.

Exact resume needs the data order and every augmentation to be a function of (seed, epoch,
index) alone, not of whatever RNG state a loader worker happened to have: then a run resumed
mid-epoch, on any number of workers, sees exactly the batches it would have seen.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, Sampler


def epoch_permutation(size: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


class ResumableSampler(Sampler[int]):
    """Shuffled indices for one epoch, sharded across ranks per global batch, from a given step.

    Step k of the epoch uses `permutation[k*B*W:(k+1)*B*W]` for a per-rank batch B and W ranks,
    rank r taking the r-th slice of B: the union over ranks is the single-process batch of size
    B*W, so a run on W processes sees the same samples per step as one process with batch B*W.
    Incomplete last batches are dropped (equal batches on every rank).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __iter__(self) -> Iterator[int]:
        permutation = epoch_permutation(self.size, self.seed, self.epoch)
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * global_batch + self.rank * self.batch_size
            yield from permutation[first:first + self.batch_size]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.batch_size


class SeededAugmentation(Dataset):
    """Applies `transform` under a torch seed derived from (seed, epoch, index).

    The global RNG is forked and restored around each sample, so augmentations neither depend on
    nor disturb the training process's own random stream (dropout, MixUp, stochastic depth).
    """

    def __init__(self, dataset: Dataset, transform: Any, seed: int) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, target = self.dataset[index]
        # Only the CPU generator: transforms draw from it, and `torch.manual_seed` would also
        # queue a seed (with a captured stack trace) for every accelerator backend, per sample.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        try:
            return self.transform(image), target
        finally:
            generator.set_state(state)
