"""Why is timm's compiled B0 slower than timm eager in GPU runs 5-7? One fresh process, one compile, timed
several ways (benchmarks/RESULTS.md, run 7).

    PYTHONPATH=src python benchmarks/peer_compile_probe.py --out results/

Runs 1 and 4 timed timm's compiled B0 inference at 9.9 ms per batch of 256; runs 5-7 at 12.9-18.3 ms, above
timm's own eager 13.8 ms, while its eager rows and effnet's held. What changed in between: the compiled row
became its process's first row, and `Timer` began each repeat behind a ~1 ms GPU spin. So this builds the
harness's compiled step once (`effnet.bench.measure`, as `gpu_check` does) and times it with and without
the spin, with the host clock, and again after eager timm has run; it also times how long the host takes to
launch one call (a step whose launches take as long as its kernels is host-bound, and then the GPU's
timing depends on what the host is doing), and, on a GPU, the compiled forward captured in a CUDA graph (its
kernels alone: `effnet bench --mode compile-cudagraphs`). Dynamo's counters show recompiles or graph
breaks. The numbers in OUT/peer_compile_probe.json. Runs on CPU too (no spin there; small batch).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet.bench.candidates import build_candidates  # noqa: E402
from effnet.bench.measure import HEAD_START_CYCLES, Timer, _inference_step  # noqa: E402


def host_ms_per_call(step, device: torch.device, calls: int = 5) -> float:
    """Host milliseconds to launch one call, the device idle and synchronized before (the launches queue)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin = time.perf_counter()
    for _ in range(calls):
        step()
    seconds = (time.perf_counter() - begin) / calls
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seconds * 1e3


def wall_ms_per_call(step, device: torch.device, repeats: int, calls: int = 5) -> float:
    """Host-clock milliseconds per call, synchronized at both ends, median of repeats."""
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        for _ in range(calls):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append((time.perf_counter() - begin) / calls * 1e3)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, help="default: 256 on GPU, 2 on CPU")
    parser.add_argument("--image-size", type=int, help="default: 224 on GPU, 64 on CPU")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("peer_compile_probe_out"))
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch_size or (256 if gpu else 2)
    size = args.image_size or (224 if gpu else 64)
    dtype = torch.bfloat16
    fmt = torch.channels_last
    candidates = build_candidates(args.model, ("timm",), fast=False)
    timm_candidate = next((c for c in candidates.items if c.name == "timm"), None)
    if timm_candidate is None:
        print(f"peer_compile_probe: timm has no {args.model} here", file=sys.stderr)
        return 2
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    spin = Timer(device, warmup=3, repeats=args.repeats, iterations=5)
    bare = Timer(device, warmup=3, repeats=args.repeats, iterations=5, head_start_cycles=0)
    rows: list[tuple[str, float]] = []

    def record(what: str, ms: float) -> None:
        rows.append((what, ms))
        print(f"{what:58} {ms:9.3f} ms  {batch / ms * 1e3:10.1f} img/s", flush=True)

    torch._dynamo.utils.counters.clear()
    begin = time.time()
    compiled = _inference_step(timm_candidate.build(device, dtype, fmt), images, timm_candidate, "compile",
                               device, dtype)
    compiled()  # compiles
    if gpu:
        torch.cuda.synchronize(device)
    compile_s = time.time() - begin
    print(f"compiled in {compile_s:.0f} s", flush=True)
    record("compiled, first: Timer with the spin (gpu_check's rows)", spin.median(compiled) * 1e3)
    record("compiled: Timer without the spin", bare.median(compiled) * 1e3)
    record("compiled: host clock, synchronized", wall_ms_per_call(compiled, device, args.repeats))
    record("compiled: host time to launch one call", host_ms_per_call(compiled, device))
    eager = _inference_step(timm_candidate.build(device, dtype, fmt), images, timm_candidate, "eager", device,
                            dtype)
    record("eager: Timer with the spin", spin.median(eager) * 1e3)
    record("eager: Timer without the spin", bare.median(eager) * 1e3)
    record("eager: host time to launch one call", host_ms_per_call(eager, device))
    record("compiled, after eager: Timer with the spin", spin.median(compiled) * 1e3)
    record("compiled, after eager: Timer without the spin", bare.median(compiled) * 1e3)
    if gpu:
        from triton.testing import do_bench

        record("compiled: triton.testing.do_bench (median)", do_bench(compiled, return_mode="median"))
        # the same compiled forward captured (gpu_check's compile-cudagraphs row): its kernels alone
        try:
            graphed = _inference_step(timm_candidate.build(device, dtype, fmt), images, timm_candidate,
                                      "compile-cudagraphs", device, dtype)
            record("compiled and captured in a CUDA graph: Timer with the spin", spin.median(graphed) * 1e3)
        except Exception as error:  # noqa: BLE001 - a capture that fails is reported; the rest is written
            print(f"compiled and captured in a CUDA graph: not run: {type(error).__name__}: {error}"[:300])
    counters = {key: dict(value) for key, value in torch._dynamo.utils.counters.items()
                if key in ("frames", "stats", "graph_break", "recompiles")}
    print("dynamo:", counters)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"model": args.model, "device": str(device), "batch_size": batch, "image_size": size,
                "head_start_cycles": HEAD_START_CYCLES, "compile_seconds": compile_s, "dynamo": counters,
                "gpu": torch.cuda.get_device_name(device) if gpu else None, "torch": torch.__version__,
                "rows": [{"what": what, "ms_per_batch": ms} for what, ms in rows]}
    (args.out / "peer_compile_probe.json").write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
