"""How many bytes of activations each training path keeps for its backward, per image: the bulk of a
training step's peak memory, measured without a GPU.

    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/saved_activations.py          # CPU, about 2 minutes
    PYTHONPATH=src python benchmarks/saved_activations.py --device cuda --size 224 --batch 32

One training forward of each training candidate of `effnet bench` (effnet, its memory savers,
`effnet-ftrain`, and timm's and torchvision's models when installed) under autocast, while
`torch.autograd.graph.saved_tensors_hooks` adds up the storages autograd keeps for the backward that
hold activations: tensors with the batch as their first dimension, each storage once (parameters,
their autocast copies and per-channel statistics left out). A step's peak adds the gradients' and
temporaries' high-water mark, which only a GPU run measures (`effnet bench`'s peak MiB), and
checkpointed stages (`effnet-stages`) keep only their inputs here and recompute the rest in the
backward. The ratios to the first peer are what the memory goal (training peak <= 0.6x timm eager)
mostly comes down to. On CPU the Triton kernels run under the interpreter (TRITON_INTERPRET=1), whose
matrix products have no bfloat16: float16 autocast stands in for it there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet.bench.candidates import build_candidates  # noqa: E402


def saved_activation_bytes(model: nn.Module, images: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Bytes of the activation storages a training forward of `model` on `images` keeps for its backward
    (under autocast to `dtype` unless None); each storage counted once, at its full size."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() > 0 and tensor.shape[0] == images.shape[0]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        if dtype is None:
            model(images)
        else:
            with torch.autocast(images.device.type, dtype=dtype):
                model(images)
    return sum(storages.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=64, help="image size (activations scale with its square)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        help="autocast dtype (default: bfloat16 on a GPU, float16 on CPU)")
    parser.add_argument("--libraries", nargs="+", default=["timm", "torchvision", "effnet"])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float16")
    dtype = None if dtype_name == "float32" else getattr(torch, dtype_name)
    candidates = build_candidates(args.model, tuple(args.libraries), memory_savers=("activations", "stages"),
                                  fused_training=True).for_task("training")
    # Peers first: the ratios divide by the first one that builds.
    candidates.sort(key=lambda candidate: candidate.name.startswith("effnet"))
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=torch.channels_last)
    print(f"{args.model}, {args.size} px, batch {args.batch}, {dtype_name}, {device.type}: activations kept for "
          f"the backward", flush=True)
    rows, base = [], None
    for candidate in candidates:
        try:
            model = candidate.build(device, torch.float32, torch.channels_last)
        except Exception as error:  # noqa: BLE001 - a peer that cannot build is a line, not the end
            print(f"{candidate.name:20} not run: {type(error).__name__}: {error}", flush=True)
            continue
        per_image = saved_activation_bytes(model, images, dtype) / args.batch
        base = base or per_image
        rows.append({"candidate": candidate.name, "bytes_per_image": per_image, "ratio": per_image / base})
        print(f"{candidate.name:20} {per_image / 2 ** 20:8.2f} MiB per image  x{per_image / base:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "size": args.size, "batch": args.batch,
                                         "dtype": dtype_name, "device": device.type, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
