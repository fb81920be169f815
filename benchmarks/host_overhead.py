"""The host's share of an eager fused training step: Python, PyTorch's dispatch and the custom operators' wrappers.

    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/host_overhead.py                # B0, about a minute
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/host_overhead.py --profile 25   # and where it goes

An eager `effnet-ftrain` step waits on its host wherever the host takes longer to issue the step's kernels than
the GPU takes to run them: run 7 timed B0's eager step at batch 256 at 126.7 ms against 59.9 ms captured in a
CUDA graph (H100), and `effnet train --fused-training` runs eager. The host's part is code, not the GPU, so it is
measured here: one training step of the full-width B0 (forward under bf16 autocast, backward, SGD's step) on
tiny images, with the Triton kernels' launches counted but not run (under the interpreter each would run NumPy
code, which a GPU does not), so the time is that of the code around them. PyTorch's own operators still run on
the CPU, most on tiny tensors, about as long as issuing them to a GPU takes (the sums of the 1x1 weight
gradients' partial products, up to a few MB, are the exception: they count some compute). Each Triton launch
costs its host more on a GPU, hence the count: `JITFunction.run`'s binding and cache lookup, 3.4 us a launch on
this CPU (`launch_binding.py`, session 27), and the driver's launch, not measurable here. The median of
`--steps` steps after three warm-up steps; the machine's other load moves it, so compare runs side by side.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.fast.fused_training import use_fused_training  # noqa: E402


def _skip_triton_launches(counter: list[int]) -> None:
    """Make every interpreted Triton launch a no-op that counts itself (outputs stay uninitialised)."""
    from triton.runtime import interpreter

    def run(self, *args, **kwargs):
        counter[0] += 1

    interpreter.InterpretedFunction.run = run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=32, help="image size (tiny: the CPU's own operators stay cheap)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15, help="timed steps (the median is printed)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile five steps and print the N functions with the most time of their own")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("run under TRITON_INTERPRET=1 (the fused kernels' launches are caught in the interpreter)")
    torch.set_num_threads(1)
    launches = [0]
    _skip_triton_launches(launches)
    torch.manual_seed(0)
    model = use_fused_training(effnet.create_model(args.model, num_classes=10).to(memory_format=torch.channels_last))
    model.train()
    images = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)  # as on a GPU

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    launches[0] = 0
    step()
    print(f"{args.model} effnet-ftrain, eager, batch {args.batch} at {args.size} px on the CPU: "
          f"{statistics.median(times) * 1e3:.1f} ms of host time a step (median of {args.steps}; "
          f"min {min(times) * 1e3:.1f}), {launches[0]} Triton launches not run")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5):
            step()
        profile.disable()
        print("five steps, by time of their own:")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
