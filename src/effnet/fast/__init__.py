"""Fast paths, each switchable and each held equal to the reference model by the tests.

- `optimize_for_inference`: BN folded into convolutions, channels-last, fused MBConv blocks
  (Triton kernels on GPU or under TRITON_INTERPRET=1, PyTorch elsewhere); `torch.compile` and
  `torch.export` take it in one graph, each Triton pass a custom operator (`custom_ops`).
- `CudaGraphModule`: a fixed-shape forward captured once and replayed.
- `enable_memory_saving`: recompute BN + activation in the backward pass instead of storing them,
  and/or checkpoint whole stages.
"""
from effnet.fast.fused import FusedMBConv, optimize_for_inference

__all__ = ["FusedMBConv", "optimize_for_inference"]
