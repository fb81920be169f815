"""The paper's optimizer, one step over a whole model: effnet's `RMSpropTF` against timm's and PyTorch's RMSprop.

    PYTHONPATH=src python benchmarks/optimizer_step.py                         # B0's parameters, here's device
    PYTHONPATH=src python benchmarks/optimizer_step.py --host-only              # the dispatch alone
    PYTHONPATH=src python benchmarks/optimizer_step.py --model efficientnet_b4 --device cuda

EfficientNet-B0 has 213 parameter tensors (5.3M values). An optimizer that loops over them issues about eight
operations each (effnet's loop before session 26: 1,786 a step), each a kernel launch on a GPU or a dispatch on a
CPU; the multi-tensor operations (`torch._foreach_*`) issue a handful for the whole list. The step runs once a
batch, in `effnet train` eagerly after the backward, so its host time adds to every step the host does not hide
behind the GPU. Candidates, each with the recipe's settings (decay 0.9, momentum 0.9, eps 1e-3, weight decay
1e-5 on the convolutions and linear weights, as `effnet.train.optim.parameter_groups` splits them): effnet's
`RMSpropTF`, timm's `RMSpropTF` (`lr_in_momentum`; its multi-tensor form on a GPU, a loop on a CPU, as PyTorch
chooses) and `torch.optim.RMSprop` (foreach; eps outside the root, so not the same optimizer, for scale). Fixed
random gradients; the median of `--repeats` timed runs of `--steps` steps each, alternating the candidates, with
ratios against timm's. `--host-only` gives each parameter tensor one value (its
rank kept, so the groups split alike): what is left is the host's cost of issuing the step, which on a CPU the
arithmetic on 5.3M values otherwise hides.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.train.optim import RMSpropTF, parameter_groups  # noqa: E402


def _candidates(model: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
    def groups():
        return parameter_groups(model, 1e-5)

    found = {"effnet RMSpropTF": RMSpropTF(groups(), lr=0.016, decay=0.9, momentum=0.9, eps=1e-3)}
    try:
        from timm.optim import RMSpropTF as TimmRMSpropTF
    except ImportError:
        print("timm is not installed: its row is left out", file=sys.stderr)
    else:
        found["timm RMSpropTF"] = TimmRMSpropTF(groups(), lr=0.016, alpha=0.9, momentum=0.9, eps=1e-3)
    found["torch RMSprop (foreach)"] = torch.optim.RMSprop(groups(), lr=0.016, alpha=0.9, momentum=0.9, eps=1e-3,
                                                           foreach=True)
    return found


def _time(optimizer: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    """Milliseconds a step, from an idle device to an idle device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1e3 / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--host-only", action="store_true", help="one value per parameter tensor")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the host's own cost, not the machine's spare cores
    model = effnet.create_model(args.model).to(device)
    if args.host_only:
        model = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros((1,) * p.ndim, device=device))
                                        for p in model.parameters()])
    generator = torch.Generator().manual_seed(0)
    for param in model.parameters():
        param.grad = (torch.randn(param.shape, generator=generator) * 1e-2).to(device)
    candidates = _candidates(model)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for optimizer in candidates.values():
        _time(optimizer, 3, device)  # the state's allocation, the kernels' first launches
    for _ in range(args.repeats):
        for name, optimizer in candidates.items():
            times[name].append(_time(optimizer, args.steps, device))
    tensors = sum(1 for _ in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, one thread"
    name += ", one value a tensor" if args.host_only else ""
    print(f"{args.model}: {tensors} parameter tensors, {sum(p.numel() for p in model.parameters()):,} values; "
          f"{name}; median of {args.repeats} runs of {args.steps} steps")
    reference = statistics.median(times["timm RMSpropTF"]) if "timm RMSpropTF" in times else None
    for label, values in times.items():
        median = statistics.median(values)
        ratio = f"   {median / reference:.2f}x timm's time" if reference else ""
        print(f"  {label:<26} {median:8.2f} ms a step{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
