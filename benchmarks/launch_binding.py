"""The Python part of each Triton launch of a fused training step: `JITFunction.run`'s binder and cache key.

    PYTHONPATH=src python benchmarks/launch_binding.py                  # B0 at batch 128, about half a minute

An eager `effnet-ftrain` step waits on its host (run 9, an H200: 87 ms a step of batch 128 in `effnet train`'s
loop, for 18 ms of kernels). `host_overhead.py` times the code around the Triton launches on this CPU, the
launches skipped (23 ms a step); this times what each launch itself costs the host before the driver: Triton's
binder (each argument's type, alignment and value specialisation, as `JITFunction.run` computes them on every
launch) and the cache key it looks the compiled kernel up by. The step's launches are caught as
`compile_check.py` catches them (the real host code on PyTorch's meta device, shaped as on a GPU: B0 at 224 px,
batch 128, bf16), and each is bound `--repeats` times with its own arguments; the median per launch and the sum
over the step are printed, then the kernels costing most. The driver's own launch (the compiled launcher, a few
microseconds) is not counted: there is no GPU here.
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be JIT functions, as on a GPU
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "src")]

import compile_check  # noqa: E402
import triton  # noqa: E402
from triton.runtime.jit import compute_cache_key  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--repeats", type=int, default=50, help="bindings of each launch (the mean is kept)")
    parser.add_argument("--top", type=int, default=8, help="kernels listed, by their share of the step")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = collections.defaultdict(list)

    def bind(kernel, launch_args: tuple, kwargs: dict) -> None:
        kwargs = dict(kwargs, debug=kwargs.get("debug", kernel.debug) or triton.knobs.runtime.debug,
                      instrumentation_mode=triton.knobs.compilation.instrumentation_mode)  # as `run` adds them
        _, key_cache, _, _, binder = kernel.device_caches[0]
        _, specialization, options = binder(*launch_args, **kwargs)
        compute_cache_key(key_cache, specialization, options)  # a first binding fills the key cache, as a step's
        start = time.perf_counter()
        for _ in range(args.repeats):
            _, specialization, options = binder(*launch_args, **kwargs)
            compute_cache_key(key_cache, specialization, options)
        seconds[kernel.fn.__name__].append((time.perf_counter() - start) / args.repeats)

    compile_check.LAUNCH_WITH = bind
    compile_check._training_launches(args.model)
    each = [s for times in seconds.values() for s in times]
    print(f"{args.model} effnet-ftrain step, batch {compile_check.BATCH}: {len(each)} Triton launches, binder and "
          f"cache key {statistics.median(each) * 1e6:.1f} us each (median), {sum(each) * 1e3:.2f} ms a step")
    for name, times in sorted(seconds.items(), key=lambda item: -sum(item[1]))[:args.top]:
        print(f"  {name:32} {len(times):4} launches x {statistics.median(times) * 1e6:5.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
