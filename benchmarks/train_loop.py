"""`effnet train`'s loop reading its loss back every step, against every N steps: what the waits cost.

    PYTHONPATH=src python benchmarks/train_loop.py                      # a GPU: B0, batch 128, bf16, channels_last
    PYTHONPATH=src python benchmarks/train_loop.py --fused              # the same with --fused-training's blocks
    PYTHONPATH=src python benchmarks/train_loop.py --device cpu         # 32 px, batch 4: it runs; nothing to see
    PYTHONPATH=src python benchmarks/train_loop.py --fused --cuda-graphs  # also each step replayed from a graph

Reading a CUDA tensor back (`.item()`) waits for every kernel queued before it. Until session 26 the loop read
each step's loss three times (a finiteness check after the forward, the epoch's sum after the backward, the
progress bar after the optimizer), so the host could not queue step n + 1 while the GPU ran step n: a step cost
the host's time plus the GPU's, where the two overlap otherwise. It now reads every `--log-every` steps. This runs
the real `train_one_epoch` (the paper's RMSProp, the EMA, label smoothing) over `--steps` batches already on the
device, alternately with `read_every=1` (a read each step, as before) and `read_every=--every`, `--repeats` times
each, and prints each one's median images/s and their ratio. On a CPU nothing runs ahead, so the ratio is 1.

Run 9 (an H200) found the fused loop host-bound: 1,474 img/s against the plain blocks' 3,423 at batch 128, where
the fused step's kernels take 18 ms of GPU time against the plain step's 26. `--host-profile N` then profiles one
pass on the host and prints where its time goes (`benchmarks/host_overhead.py` measures the same code on a CPU
with the launches skipped, 23 ms a step, and `launch_binding.py` Triton's binding of its launches, 2.2 ms: most
of the GPU's host time is unexplained). `--cuda-graphs` also times the loop `effnet train --cuda-graphs` runs
(session 29): each step replayed from one CUDA graph, no host time per kernel.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.train.build import build_ema  # noqa: E402
from effnet.train.engine import Precision, train_one_epoch  # noqa: E402
from effnet.train.optim import build_optimizer  # noqa: E402

CRITERION = nn.CrossEntropyLoss(label_smoothing=0.1)


def _epoch(model, batches, optimizer, ema, device, precision, channels_last: bool, read_every: int,
           whole_step=None) -> float:
    """Images/s of one pass over `batches`, timed from an idle device to an idle device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = train_one_epoch(model, batches, optimizer, CRITERION, device=device, precision=precision,
                             learning_rate=lambda step: 0.016, first_step=0, channels_last=channels_last, ema=ema,
                             read_every=read_every, whole_step=whole_step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result["images"] / (time.perf_counter() - started)


def _host_profile(run: dict, every: int, steps: int, top: int) -> None:
    """One more pass under cProfile, its `top` costliest functions by their own time. The autograd engine runs
    a GPU's backward on a thread of its own, which cProfile does not see, so the backward runs on this one here
    (`set_multithreading_enabled(False)`). Profiling slows the Python it sees, so compare shares, not times."""
    profile = cProfile.Profile()
    with torch.autograd.set_multithreading_enabled(False):
        profile.enable()
        started = time.perf_counter()
        _epoch(**run, read_every=every)
        seconds = time.perf_counter() - started
        profile.disable()
    print(f"host profile: {seconds / steps * 1e3:.1f} ms a step under cProfile, {top} costliest functions:")
    stats = io.StringIO()
    pstats.Stats(profile, stream=stats).sort_stats("tottime").print_stats(top)
    print("  ncalls" + stats.getvalue().split("ncalls", 1)[-1].rstrip())  # the table, without pstats' preamble


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, help="224 on a GPU, 32 on a CPU")
    parser.add_argument("--batch", type=int, help="128 on a GPU, 4 on a CPU")
    parser.add_argument("--amp", choices=["none", "bf16"], help="bf16 on a GPU (the default there), none on a CPU")
    parser.add_argument("--fused", action="store_true", help="the fused training blocks (a GPU, or Triton's "
                        "interpreter)")
    parser.add_argument("--steps", type=int, help="optimizer steps in one timed pass: 20 on a GPU, 4 on a CPU")
    parser.add_argument("--every", type=int, default=10, help="read_every of the new loop (--log-every's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each loop, alternating")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time the loop replaying each step from a CUDA graph (`effnet train --cuda-graphs`; "
                             "a GPU), reading every --every steps")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--host-profile", type=int, default=0, metavar="N",
                        help="then profile one pass on the host (cProfile, the backward on this thread) and print "
                             "its N costliest functions: where an eager step's host time goes")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.cuda_graphs and not gpu:
        parser.error("--cuda-graphs needs a CUDA device")
    args.amp = args.amp or ("bf16" if gpu else "none")
    args.size, args.batch = args.size or (224 if gpu else 32), args.batch or (128 if gpu else 4)
    args.steps = args.steps or (20 if gpu else 4)
    channels_last = device.type == "cuda" or args.fused
    model = effnet.create_model(args.model, num_classes=1000).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.fused:
        from effnet.fast.fused_training import use_fused_training

        use_fused_training(model)
    optimizer = build_optimizer(model, "rmsprop_tf", lr=0.016, weight_decay=1e-5)
    ema = build_ema(model, 0.9999)
    precision = Precision.create(args.amp, device)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, generator=generator).to(device),
                torch.randint(0, 1000, (args.batch,), generator=generator).to(device)) for _ in range(args.steps)]
    run = dict(model=model, batches=batches, optimizer=optimizer, ema=ema, device=device, precision=precision,
               channels_last=channels_last)
    _epoch(**run, read_every=args.every)  # warm-up: compiles, cuDNN plans, the optimizer's state
    rates: dict[int | str, list[float]] = {1: [], args.every: []}
    graphed = None
    if args.cuda_graphs:
        from effnet.train.graphed import GraphedStep, TrainStep

        # the same model and optimizer state, its step captured (the optimizer's rate from a device tensor)
        graphed = GraphedStep(TrainStep(model, optimizer, CRITERION, precision=precision, device=device))
        _epoch(**run, read_every=args.every, whole_step=graphed)  # its eager steps and the capture
        rates["graphs"] = []
    for _ in range(args.repeats):
        for every in rates:
            rates[every].append(_epoch(**run, read_every=args.every, whole_step=graphed) if every == "graphs"
                                else _epoch(**run, read_every=every))
    each, every = statistics.median(rates[1]), statistics.median(rates[args.every])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model} {'fused ' if args.fused else ''}training loop, {args.size} px, batch {args.batch}, "
          f"{args.amp}, {name}; median of {args.repeats} passes of {args.steps} steps")
    print(f"  loss read every step:       {each:9.1f} img/s")
    print(f"  loss read every {args.every:>2} steps:  {every:9.1f} img/s   ({every / each:.2f}x)")
    if graphed is not None:
        replayed = statistics.median(rates["graphs"])
        print(f"  each step a CUDA graph:     {replayed:9.1f} img/s   ({replayed / every:.2f}x the line above)")
    if args.host_profile:
        _host_profile(run, args.every, args.steps, args.host_profile)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "fused": args.fused, "device": name,
                                         "batch": args.batch, "size": args.size, "amp": args.amp,
                                         "steps": args.steps, "every": args.every, "images_per_second": {
                                             "read_every_1": rates[1], f"read_every_{args.every}": rates[args.every],
                                             **({"cuda_graphs": rates["graphs"]} if graphed else {})},
                                         "ratio": every / each}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
