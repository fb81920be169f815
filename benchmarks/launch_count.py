"""How many kernels a training step launches, by kind and by the line that launches them, without a GPU.

    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/launch_count.py                  # CPU, under a minute
    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/launch_count.py --width 0.5 --lines 30 --json out.json

One training step (forward under autocast, backward, the optimizer's step) of a narrow B0 (`--width`,
`--depth`), plain and with the fused training MBConv (`effnet-ftrain`), counted at PyTorch's dispatcher
(`TorchDispatchMode`): every PyTorch operator that would launch a kernel (views and other metadata-only
operators left out), inside the fused training's custom operators too, and every Triton launch. On a GPU each
small PyTorch kernel costs a few microseconds even inside a CUDA graph: run 7's profile of a B0 step of batch
128 had 201 reductions and about 520 element-wise kernels, 4-5 ms of the fused step's 32.7 ms of kernels.
Where they come from is a question of code, not of the GPU, so it is answered here. Float16 autocast stands in
for bf16 (the interpreter's matrix products have no bf16), and the optimizer runs per parameter on a CPU,
where CUDA takes a few multi-tensor launches for it: those are counted apart.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.fast.fused_training import use_fused_training  # noqa: E402
from effnet.models import get_entry  # noqa: E402
from effnet.scaling import scale_by_multipliers  # noqa: E402

# Operators that only make a view, read metadata or allocate: no kernel on a GPU.
METADATA = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "view", "_unsafe_view",
            "as_strided", "as_strided_", "expand", "t", "permute", "select", "slice", "unsqueeze", "squeeze",
            "transpose", "detach", "alias", "_reshape_alias", "unflatten", "split", "unbind", "narrow", "diagonal",
            "lift_fresh", "set_", "is_nonzero", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel",
            "_nnpack_available", "_record_function_enter_new", "_record_function_exit"}
# Operators that copy only where they must (another dtype or layout): a launch where the result is new memory.
COPY_IF_NEEDED = {"to", "contiguous", "reshape", "flatten"}
ROOT = str(Path(__file__).resolve().parents[1] / "src" / "effnet")


class LaunchCounter(TorchDispatchMode):
    """Counts the kernel-launching operators while active, by name and by the effnet source line (or the
    optimizer, or autograd's own work) that called them; a fused training operator's own operators included."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: collections.Counter = collections.Counter()
        self.by_line: collections.Counter = collections.Counter()
        self.in_triton = False  # the interpreter's own tensor operations while it runs a kernel: not launches

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name.startswith("effnet::"):  # run the operator's Python body under this mode, to count inside it
            from torch._library.custom_ops import OPDEFS

            with torch._C._IncludeDispatchKeyGuard(torch._C.DispatchKey.Python), self:
                return OPDEFS[name]._init_fn(*args, **kwargs)
        out = func(*args, **kwargs)
        short = func.__name__.split(".")[0]
        launches = short not in METADATA
        if short in COPY_IF_NEEDED:
            launches = out.untyped_storage().data_ptr() != args[0].untyped_storage().data_ptr()
        if launches and not self.in_triton:
            self.by_name[short] += 1
            self.by_line[(short, _caller())] += 1
        return out


def _caller() -> str:
    """Where an operator call comes from: the innermost effnet line, else the optimizer or autograd."""
    frames = traceback.extract_stack()
    for frame in reversed(frames):
        if frame.filename.startswith(ROOT):
            return f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno}"
    if any("torch/optim" in frame.filename for frame in frames):
        return "optimizer"
    return "autograd or loss"


@contextlib.contextmanager
def _triton_launches(counter: collections.Counter, mode: LaunchCounter):
    """While active, count each Triton launch (under the interpreter: `InterpretedFunction.run`) by kernel,
    and keep the interpreter's own tensor operations out of `mode`'s counts."""
    from triton.runtime import interpreter

    real = interpreter.InterpretedFunction.run

    def run(self, *args, **kwargs):
        counter[self.fn.__name__] += 1
        mode.in_triton = True
        try:
            return real(self, *args, **kwargs)
        finally:
            mode.in_triton = False

    interpreter.InterpretedFunction.run = run
    try:
        yield
    finally:
        interpreter.InterpretedFunction.run = real


def step_counts(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Launches of one training step of `model` (after one uncounted step, so that lazy set-up is done)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    model.train()
    step()
    mode, triton_launches = LaunchCounter(), collections.Counter()
    with _triton_launches(triton_launches, mode), mode:
        step()
    optimizer_launches = sum(n for (_, line), n in mode.by_line.items() if line == "optimizer")
    return {"pytorch": sum(mode.by_name.values()) - optimizer_launches, "optimizer": optimizer_launches,
            "triton": sum(triton_launches.values()), "by_name": dict(mode.by_name.most_common()),
            "by_line": {f"{name} {line}": n for (name, line), n in mode.by_line.most_common()},
            "triton_by_kernel": dict(triton_launches.most_common())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25, help="B0's width multiplier (narrow: the interpreter)")
    parser.add_argument("--depth", type=float, default=0.25, help="B0's depth multiplier (0.25: seven blocks)")
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lines", type=int, default=20, help="how many launching lines to print per model")
    parser.add_argument("--json", help="also write the counts to this file")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("run under TRITON_INTERPRET=1 (the counts are taken on CPU, the kernels interpreted)")
    spec = scale_by_multipliers(get_entry("efficientnet_b0").spec, depth=args.depth, width=args.width,
                                name="efficientnet_b0_narrow")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,), generator=generator)
    results = {}
    for name in ("effnet", "effnet-ftrain"):
        torch.manual_seed(0)
        model = effnet.create_model(spec, num_classes=10).to(memory_format=torch.channels_last)
        if name == "effnet-ftrain":
            model = use_fused_training(model)
        counts = results[name] = step_counts(model, images, labels)
        print(f"{name}: {counts['triton']} Triton launches, {counts['pytorch']} PyTorch kernels "
              f"(+ {counts['optimizer']} of the optimizer's, per parameter on a CPU)")
        for line, count in list(counts["by_line"].items())[:args.lines]:
            if not line.endswith(" optimizer"):
                print(f"  {count:5}  {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
