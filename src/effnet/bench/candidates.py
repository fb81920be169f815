"""What `effnet bench` compares: effnet's model and fast paths, and the peers' equivalent models."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Candidate:
    """One model to time. `build(device, dtype, memory_format)` returns it ready on the device;
    `autocast` says whether it runs under autocast (fp32 weights) or already is in `dtype`."""

    name: str
    tasks: tuple[str, ...]
    build: Callable[[torch.device, torch.dtype, torch.memory_format], nn.Module]
    autocast: bool = True
    checked: bool = False  # compare its logits with effnet's eager reference


@dataclass
class Candidates:
    resolution: int
    reference: nn.Module  # effnet's model, float32, eval: the function every checked candidate computes
    items: list[Candidate]

    def for_task(self, task: str) -> list[Candidate]:
        return [c for c in self.items if task in c.tasks]


def _place(model: nn.Module, device: torch.device, memory_format: torch.memory_format) -> nn.Module:
    return model.to(device=device, memory_format=memory_format)


def _timm_builder(name: str) -> Callable | None:
    try:
        import timm
    except ImportError:
        return None
    if name not in timm.list_models():
        return None
    return lambda device, dtype, fmt: _place(timm.create_model(name), device, fmt)


def _torchvision_builder(name: str) -> Callable | None:
    import torchvision

    if name not in torchvision.models.list_models():
        return None
    return lambda device, dtype, fmt: _place(torchvision.models.get_model(name), device, fmt)


def build_candidates(model_name: str, libraries: tuple[str, ...], *, fast: bool = True,
                     memory_savers: tuple[str, ...] = ("activations",), fuse_expansion: bool = False,
                     unfused_stem: bool = False, triton_depthwise: bool = False,
                     fused_training: bool = False) -> Candidates:
    """effnet's candidates (plain; fused inference; memory-saving training) and the named peers'.

    `fuse_expansion` adds `effnet-fast-expand`: the fused model with the experimental
    expansion-in-depthwise kernel (`effnet.fast.expansion`). `unfused_stem` adds `effnet-fast-unfused-stem`:
    the fused model with the input cast, stem conv and SiLU as PyTorch passes instead of one stem kernel
    (`effnet.fast.stem`), which shows what that kernel gains. `triton_depthwise`
    adds `effnet-tdw` (training): the plain model with its depthwise convs' forward and backward
    as Triton kernels (`effnet.fast.depthwise_train`). `fused_training` adds `effnet-ftrain` (training): the
    plain model with each MBConv's 1x1 convs carrying their batch norms (`effnet.fast.fused_training`)."""
    import effnet
    from effnet.fast import optimize_for_inference
    from effnet.fast.depthwise_train import use_triton_depthwise
    from effnet.fast.fused_training import use_fused_training
    from effnet.fast.memory import enable_memory_saving

    torch.manual_seed(0)
    reference = effnet.create_model(model_name).eval()
    items: list[Candidate] = []
    all_tasks = ("inference", "latency", "training")
    if "effnet" in libraries:
        items.append(Candidate("effnet", all_tasks, lambda d, t, f: _place(copy.deepcopy(reference), d, f),
                               checked=True))
        if fast:
            # (name, optimize_for_inference options, wanted)
            variants = (("effnet-fast", {}, True), ("effnet-fast-expand", {"fuse_expansion": True}, fuse_expansion),
                        ("effnet-fast-unfused-stem", {"fuse_stem": False}, unfused_stem))
            for name, options, wanted in variants:
                if wanted:
                    items.append(Candidate(name, ("inference", "latency"), autocast=False, checked=True,
                                           build=lambda d, t, f, options=options: optimize_for_inference(
                                               copy.deepcopy(reference).to(d), dtype=t, **options)))
            for saver in memory_savers:
                if saver != "none":
                    items.append(Candidate(f"effnet-{saver}", ("training",), lambda d, t, f, saver=saver: _place(
                        enable_memory_saving(copy.deepcopy(reference), saver), d, f)))
            if triton_depthwise:
                items.append(Candidate("effnet-tdw", ("training",), lambda d, t, f: _place(
                    use_triton_depthwise(copy.deepcopy(reference)), d, f)))
            if fused_training:
                items.append(Candidate("effnet-ftrain", ("training",), lambda d, t, f: _place(
                    use_fused_training(copy.deepcopy(reference)), d, f)))
    for library, builder in (("timm", _timm_builder), ("torchvision", _torchvision_builder)):
        if library in libraries:
            build = builder(model_name)
            items.append(Candidate(library, all_tasks, build) if build else
                         Candidate(library, all_tasks, _missing(library, model_name)))
    return Candidates(reference.spec.resolution, reference, items)


def _missing(library: str, name: str) -> Callable:
    def build(device: torch.device, dtype: torch.dtype, fmt: torch.memory_format) -> nn.Module:
        raise LookupError(f"{library} has no {name} here (not installed, or no such model)")

    return build
