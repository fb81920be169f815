"""One benchmark row: build a candidate, prepare it for a mode, time a task, read peak memory."""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from effnet.bench import GRAPH_MODES, INFERENCE_MODES
from effnet.bench.candidates import Candidate


@dataclass
class BenchRow:
    task: str
    mode: str
    candidate: str
    batch_size: int
    images_per_second: float | None = None
    ms_per_batch: float | None = None
    peak_memory_mib: float | None = None
    error_vs_reference: float | None = None  # relative L2 error of logits vs effnet eager
    note: str = ""


# Before each timed repeat on CUDA the GPU spins this many cycles (about a millisecond), so that the host
# queues the repeat's launches while it waits: the start event then times the GPU's work, not the latency
# of the first launch (tens of microseconds: a tenth of a 1x1 layer's time in the sweeps).
HEAD_START_CYCLES = 2_000_000


class Timer:
    """Median seconds per call of `step`, with device events on CUDA. `head_start_cycles` is the GPU spin
    before each repeat (0: none)."""

    def __init__(self, device: torch.device, warmup: int, repeats: int, iterations: int,
                 head_start_cycles: int = HEAD_START_CYCLES) -> None:
        self.device, self.warmup, self.repeats, self.iterations = device, warmup, repeats, iterations
        self.head_start_cycles = head_start_cycles

    def median(self, step: Callable[[], Any]) -> float:
        for _ in range(self.warmup):
            step()
        samples = []
        for _ in range(self.repeats):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                if self.head_start_cycles and hasattr(torch.cuda, "_sleep"):  # private; in every release since 1.x
                    torch.cuda._sleep(self.head_start_cycles)
                start.record()
                for _ in range(self.iterations):
                    step()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3 / self.iterations)
            else:
                begin = time.perf_counter()
                for _ in range(self.iterations):
                    step()
                samples.append((time.perf_counter() - begin) / self.iterations)
        return statistics.median(samples)


def _peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    output, reference = output.float(), reference.float()
    return ((output - reference).norm() / reference.norm()).item()


def _autocast(candidate: Candidate, device: torch.device, dtype: torch.dtype,
              cache: bool = True) -> contextlib.AbstractContextManager:
    if candidate.autocast and dtype != torch.float32:
        # Graph capture needs autocast's weight-cast cache off (cached casts would not be replayed).
        return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)
    return contextlib.nullcontext()


def _compile(model: nn.Module) -> Callable[..., torch.Tensor]:
    """`torch.compile` as a fresh process would run it: compiled rows before this one leave no state behind
    (`torch.compiler.reset`), and the row's fixed shapes are compiled static (no automatic dynamic shapes).
    GPU runs 5 and 6 measured timm's compiled B0 inference 24% and 46% under runs 1 and 4, each after other
    compiles in the same process."""
    torch.compiler.reset()
    return torch.compile(model, dynamic=False)


def freeze(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> None:
    """Run a compiled `forward` once now, so that Inductor compiles it with freezing on: the weights become
    constants (BN folded into the convolutions, oneDNN's weights prepacked). Inductor reads the setting as it
    compiles, and `torch.compile(options={"freezing": True})` does not reach it (torch 2.14)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        forward(images)


def _inference_step(model: nn.Module, images: torch.Tensor, candidate: Candidate, mode: str,
                    device: torch.device, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    model.eval()
    if mode in ("compile", "compile-cudagraphs", "compile-freezing"):
        model = _compile(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(candidate, device, dtype, cache=mode not in GRAPH_MODES):
            return model(x)

    if mode == "compile-freezing":
        freeze(forward, images)
    # compile-cudagraphs: the compiled forward captured, as `torch.compile(mode="reduce-overhead")` runs it: the
    # compiled kernels without the host's launch cost (GPU runs 5-7 timed timm's compiled B0 slower than eager).
    if mode in GRAPH_MODES:
        from effnet.fast.graphs import CudaGraphModule

        graphed = CudaGraphModule(_Wrapped(forward), images, copy_output=False)
        return lambda: graphed(images)
    return lambda: forward(images)


class _Wrapped(nn.Module):
    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def _training_step(model: nn.Module, images: torch.Tensor, candidate: Candidate, mode: str,
                   device: torch.device, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    targets = torch.randint(0, 1000, (images.shape[0],), device=device)
    forward = _compile(model) if mode in ("compile", "compile-cudagraphs") else model
    if mode in GRAPH_MODES:
        if dtype == torch.float16:
            raise ValueError("CUDA-graph training runs bf16 or fp32 (float16's loss scaling waits on the host)")
        from effnet.fast.graphs import CudaGraphTrainingStep

        # compile-cudagraphs: the compiled forward and backward captured with the optimizer's step (compiled in
        # the capture's warm-up steps), as `torch.compile(mode="reduce-overhead")` would replay them
        def captured() -> torch.Tensor:
            with _autocast(candidate, device, dtype, cache=False):
                loss = F.cross_entropy(forward(images), targets)
            loss.backward()
            optimizer.step()
            return loss

        return CudaGraphTrainingStep(captured, optimizer, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step() -> torch.Tensor:
        with _autocast(candidate, device, dtype):
            loss = F.cross_entropy(forward(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def measure(candidate: Candidate, task: str, mode: str, *, device: torch.device, dtype: torch.dtype,
            memory_format: torch.memory_format, batch_size: int, image_size: int, timer: Timer,
            reference: nn.Module, tolerance: float) -> BenchRow:
    """Time one (task, mode, candidate); a failure becomes the row's note (one line), not an exception."""
    row = BenchRow(task, mode, candidate.name, batch_size)
    if mode in GRAPH_MODES and device.type != "cuda":
        row.note = "CUDA graphs need a CUDA device"
        return row
    if mode in INFERENCE_MODES and task == "training":
        row.note = "freezing compiles the weights in as constants: inference only"
        return row
    model: Any = None
    try:
        _peak_start(device)
        model = candidate.build(device, dtype, memory_format)
        images = torch.randn(batch_size, 3, image_size, image_size, device=device)
        images = images.contiguous(memory_format=memory_format)
        make = _training_step if task == "training" else _inference_step
        step = make(model, images, candidate, mode, device, dtype)
        seconds = timer.median(step)
        row.ms_per_batch = seconds * 1e3
        row.images_per_second = batch_size / seconds
        row.peak_memory_mib = _peak_mib(device)
        if task != "training" and candidate.checked:
            row.error_vs_reference = _check(step(), images, reference, device)
            if not row.error_vs_reference <= tolerance:
                row.note = f"MISMATCH: error above {tolerance:g}"
    except Exception as error:  # noqa: BLE001 - a row that cannot run is reported, the others still run
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        row.note = f"not run: {type(error).__name__}: {message}"[:200]
    finally:
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _check(output: torch.Tensor, images: torch.Tensor, reference: nn.Module, device: torch.device) -> float:
    """Relative error of the first images' logits against effnet's float32 eager model."""
    count = min(8, images.shape[0])
    expected_model = reference.to(device)
    with torch.inference_mode():
        expected = expected_model(images[:count].float())
    reference.to("cpu")
    return relative_error(output[:count].clone(), expected)
