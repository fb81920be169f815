"""A 1x1 convolution as one library matrix product (cuBLAS on a GPU): a tuning-file choice for small maps.

On B0's and B4's small maps the Triton 1x1 kernels took 2.5-3.5x the bare cuDNN convolution's time in every GPU
run (benchmarks/RESULTS.md; run 5: B0's gated 1152 -> 192 projections at 7 px 149 us against 49, its 192 -> 1152
expansions 78 against 28; run 7: B4's gated 1632 -> 272 at 12 px 120 against 36). There a map is 49-144 pixels
an image, so the per-image row tiles of a gated kernel are partly empty and re-read the weights per image, and
wide input channels give the library's larger tiles the advantage.

Here the conv is `torch.addmm` on the channels-last (pixels, channels) matrix view, the bias added in the
library's epilogue; the squeeze-excitation gate scales the input in one element-wise pass before it (rounded
to the input's dtype, as the PyTorch reference rounds it), and the SiLU or the residual apply in place after
it: one more read and write of the input where gated, of the output where activated or with a residual. What
the Triton kernels do in one pass takes two or three here, so it can only win where the product itself is much
faster; `benchmarks/pointwise_sweep.py` times it per layer ("cublas") and records it where it wins (tuning
kernel `cublas`, no tiles). Never a default. The same function on any device (BLAS on CPU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effnet.fast.kernels import matrix_views


def pointwise_blas(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, *, act: bool,
                   gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """act(conv1x1(x * gate) + bias) + residual for channels-last `x` (N, in, H, W), weights laid out (in, out),
    `gate` (N, in) or None, `residual` (N, out, H, W) or None: `kernels.pointwise`'s arguments and result."""
    out, a, o, r = matrix_views(x, weight_t.shape[1], residual)
    if gate is not None:
        batch, channels = gate.shape
        a = (a.view(batch, -1, channels) * gate.to(a.dtype)[:, None, :]).view(-1, channels)
    torch.addmm(bias.to(a.dtype), a, weight_t.to(a.dtype), out=o)
    if act:
        F.silu(o, inplace=True)
    if residual is not None:
        o.add_(r)
    return out
