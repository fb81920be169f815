"""What the layer sweeps (depthwise_sweep.py, pointwise_sweep.py, depthwise_train_sweep.py, bn_*_sweep.py)
share: their options, timer, the variants' checked timings, the promotion of a layer's winner into a tuning file,
and their end."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from triton.runtime.errors import OutOfResources

from effnet.bench.measure import Timer
from effnet.fast import tuning

tuning.use(None)  # a sweep's "default" is the kernels' own: not $EFFNET_TUNING's file, nor the one shipped for this GPU


def sweep_parser(doc: str, filename: str, configs: int, configs_help: str) -> argparse.ArgumentParser:
    """The options every sweep takes (the model and its layers, batch, device, how many configurations,
    where to write); a sweep adds its own before parsing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--configs", type=int, default=configs, help=configs_help)
    parser.add_argument("--layers", type=int, nargs="*", help="indices of the layer shapes to run (default: all)")
    parser.add_argument("--out", type=Path, help=f"write {filename} here")
    parser.add_argument("--tuning", type=Path, help="record each layer's winner (>= 3%% faster than the default) "
                                                     "in this tuning file (effnet.fast.tuning)")
    return parser


def sweep_dtype(device: torch.device) -> torch.dtype:
    """The sweeps' activation dtype: bf16 on a GPU, and on PyTorch's meta device, where `precompile.py` runs them
    to compile what a GPU would; float32 on CPU, under Triton's interpreter."""
    return torch.bfloat16 if device.type in ("cuda", "meta") else torch.float32


def sweep_timer(device: torch.device) -> Timer:
    """Medians of 20 repeats of 10 calls on a GPU (run 5 timed 5 repeats of 3: the same tiles came out up to
    60% apart on one layer); on CPU (Triton's interpreter) the sweeps only prove that they run, so one call
    per timing."""
    return Timer(device, warmup=5, repeats=20, iterations=10) if device.type == "cuda" else Timer(device, 0, 1, 1)


def time_variants(variants: dict[str, Callable], error: Callable, timer: Timer
                  ) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """(errors, times, skipped): each variant run once, its output's error (`error(output)`) taken, then timed.
    A variant the card cannot launch (Triton's OutOfResources: more shared memory than a multiprocessor has) is
    named in `skipped` and the rest still run, so that one tile set does not cost a lease's whole sweep; the
    default must run."""
    errors, times, skipped = {}, {}, []
    for name, variant in variants.items():
        try:
            output = variant()
        except OutOfResources:
            if name == "default":
                raise
            skipped.append(name)
            continue
        errors[name] = error(output)
        times[name] = timer.median(variant)
    return errors, times, skipped


def outcome(skipped: list[str], promoted: str | dict[str, str | None] | None) -> str:
    """The end of a layer's line: the variants skipped for want of resources, and what went into the tuning file
    (`promote`'s name, or one per pass: {op: name})."""
    tuned = promoted.items() if isinstance(promoted, dict) else [("", promoted)]
    return (f"; out of resources: {', '.join(skipped)}" if skipped else "") + "".join(
        f"; tuned{f' {op}' if op else ''}: {name}" for op, name in tuned if name)


def finish(out: Path | None, filename: str, device: torch.device, rows: list[dict], bound: float) -> int:
    """Write the rows to OUT/filename (if OUT is given); exit status 1 if any variant's error passed `bound`."""
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / filename).write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))
    worst = max(max(row["errors"].values()) for row in rows)
    return 0 if worst <= bound else 1


def sweep_layers(shapes: Counter, layers: list[int] | None, sweep) -> tuple[list[dict], Counter]:
    """The fused training sweeps' loop: `sweep(shape, count)` for each layer shape (sorted; only the indices
    in `layers` if given), its rows, and each timed step summed over the layers, weighted by their count."""
    rows, totals = [], Counter()
    for index, (shape, count) in enumerate(sorted(shapes.items())):
        if layers is not None and index not in layers:
            continue
        rows.append(sweep(shape, count))
        for name, seconds in rows[-1]["seconds"].items():
            totals[name] += count * seconds
    return rows, totals


def print_step_totals(totals: dict[str, float], batch: int, layers: str) -> None:
    """The fused training sweeps' last lines: each timed step summed over the layers (weighted by how many
    there are), and the fused step against compiled PyTorch's where that was timed."""
    summary = ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in totals.items())
    print(f"\nper training step of batch {batch}, {layers}, forward + backward: {summary}")
    if totals.get("compiled"):
        print(f"fused / compiled PyTorch: {totals['fused'] / totals['compiled']:.2f}x the time "
              f"(best tiles {totals['fused best'] / totals['compiled']:.2f}x)")


MARGIN = 0.03  # a variant must beat the default by 3% plus the layer's noise to be written to the tuning file
AGAIN = "default again"  # the default timed a second time, after the variants


def noise(times: dict[str, float]) -> float:
    """How far apart the default's two timings are, as a fraction of the faster: this layer's timing noise."""
    again = times.get(AGAIN, times["default"])
    return abs(again - times["default"]) / min(again, times["default"])


ENTRY_FIELDS = ("op", "key", "kernel", "tiles", "seconds", "default_seconds", "device")  # the rest: a kernel's extras


def recorded_choice(path: Path | None, op: str, key: dict) -> tuple | None:
    """The tuning file's choice for one layer as a sweep's (kernel, tiles, extra) triple, with the seconds it was
    recorded at: ((kernel, tiles, extra), seconds), or None where the file (or `path`) holds none."""
    entry = tuning.recorded(path, op, key) if path is not None else None
    if entry is None:
        return None
    extra = {name: value for name, value in entry.items() if name not in ENTRY_FIELDS}
    return (entry["kernel"], tuple(entry["tiles"]), extra), entry["seconds"]


def with_recorded(path: Path | None, op: str, key: dict, choices: dict[str, tuple]) -> dict[str, tuple]:
    """`choices` and the tuning file's own choice for the layer where it is not among them ("recorded ..."), so
    that a sweep narrower than the one that wrote the file times the recorded choice again beside its own."""
    held = recorded_choice(path, op, key)
    if held is None or held[0] in choices.values():
        return choices
    kernel, tiles, _ = held[0]
    return {**choices, f"recorded {kernel} {tiles}": held[0]}


def promote(path: Path | None, op: str, key: dict, choices: dict[str, tuple], times: dict[str, float],
            errors: dict[str, float], bound: float, device: torch.device) -> str | None:
    """Record the fastest correct variant of one layer in the tuning file at `path`, if it beats the default's
    faster timing by MARGIN plus the noise, else drop the layer's entry from the file (an earlier run's choice
    against an older default: the default is what this run measured as good). `choices` maps a variant's
    name to (kernel, tiles, extra entry fields); returns its name.

    A choice the file holds that this sweep did not time (a narrower sweep than the one that recorded it) stays
    unless a timed variant beats the seconds it was recorded at too, or the default now beats them (the default
    changed since)."""
    if path is None or "default" not in times:
        return None
    correct = [name for name in choices if errors.get(name, float("inf")) <= bound and name in times]
    best = min(correct, key=times.get) if correct else None
    default = min(times["default"], times.get(AGAIN, times["default"]))
    margin = 1 - MARGIN - noise(times)
    held = recorded_choice(path, op, key)
    if held is not None and held[0] not in choices.values() and default > margin * held[1]:
        if best is None or times[best] > margin * held[1]:
            return None  # the recorded choice, not timed here, keeps its place
    if best is None or times[best] > margin * default:
        tuning.forget(path, op, key)
        return None
    kernel, tiles, extra = choices[best]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    tuning.record(path, op, key, kernel, tiles, device=name, seconds=times[best], default_seconds=default,
                  **extra)
    return best
