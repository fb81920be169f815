"""Candidates as Ray tasks, for users who outgrow one machine (the optional `ray` extra)."""
from __future__ import annotations

from typing import Sequence

from effnet.errors import EffnetError


def run_on_ray(requests: Sequence, address: str) -> list:
    """Run each request as a Ray task (one CPU each) on the cluster at `address` ("local": start one)."""
    try:
        import ray
    except ImportError:
        raise EffnetError("--ray needs Ray: pip install 'effnet[ray]'") from None
    from effnet.search.runner import run_one

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False)
    task = ray.remote(num_cpus=1)(run_one)
    return ray.get([task.remote(request, 1, None) for request in requests])
