"""Fast paths, each switchable and each held equal to the reference model by the tests.

- `optimize_for_inference`: BN folded into convolutions, channels-last, fused MBConv blocks
  (Triton kernels on GPU or under TRITON_INTERPRET=1, PyTorch elsewhere); `torch.compile` and
  `torch.export` take it in one graph, each Triton pass a custom operator (`custom_ops`).
  `optimize_for_device`: the same in the dtype it runs on a device (bf16 on a GPU, float32 elsewhere).
- `CudaGraphModule`: a fixed-shape forward captured once and replayed.
- `enable_memory_saving`: recompute BN + activation in the backward pass instead of storing them,
  and/or checkpoint whole stages (one of `MEMORY_SAVERS`).
- `use_fused_training` (experimental): MBConv training with every convolution
  carrying its batch norms (`bn_pointwise`, `bn_depthwise`, `se_projection`: Triton kernels as custom
  operators).

The package itself loads without torch (the command line builds its options from these names); each
of the names above, and each submodule (`effnet.fast.memory`, `effnet.fast.graphs`, ...), imports it on
first use.
"""
from __future__ import annotations

from effnet import lazy

MEMORY_SAVERS = ("none", "activations", "stages", "both")  # enable_memory_saving's modes
BACKENDS = ("torch", "fast")  # a --backend option's models: the plain one, or optimize_for_device's

_LAZY = {"FusedMBConv": "effnet.fast.fused", "optimize_for_inference": "effnet.fast.fused",
         "optimize_for_device": "effnet.fast.fused", "CudaGraphModule": "effnet.fast.graphs",
         "enable_memory_saving": "effnet.fast.memory", "use_fused_training": "effnet.fast.fused_training"}

__all__ = ["BACKENDS", "CudaGraphModule", "FusedMBConv", "MEMORY_SAVERS", "enable_memory_saving",
           "optimize_for_device", "optimize_for_inference", "use_fused_training"]

__getattr__, __dir__ = lazy.exports(__name__, _LAZY, globals())
