"""Integer arithmetic of launch grids and tiles, on the host.

`triton.cdiv` and `triton.next_power_of_2` are constexpr functions (Triton 3.4 on): each host call unwraps its
arguments through Triton's frontend, a few microseconds, and a B0 fused training step made about 1,200 of them
(11% of its host time, benchmarks/host_overhead.py). The kernels' host code calls these instead.
"""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """ceil(a / b)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 at least n (n >= 1), as `triton.next_power_of_2` gives it."""
    return 1 << (int(n) - 1).bit_length()


def image_chunks(batch: int, pixels: int, block_m: int, programs: int) -> int:
    """Rows per chunk when each image's `pixels` rows are cut into whole row tiles of `block_m` to make
    about `programs` chunks in all (at least one per image): what `bn_pointwise_kernels._image_chunk` walks."""
    per_image = max(1, min(cdiv(pixels, block_m), cdiv(programs, batch)))
    return cdiv(cdiv(pixels, per_image), block_m) * block_m
