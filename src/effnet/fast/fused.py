"""An inference-only EfficientNet whose MBConv blocks run as three fused passes.

`optimize_for_inference(model)` folds every BatchNorm into its convolution, keeps activations
channels-last, and replaces each MBConv block by `FusedMBConv`:

    expand   = pointwise(x, act=SiLU)                         # 1 x 1 conv + bias + SiLU
    dw, sums = depthwise(expand, act=SiLU, pool=True)         # k x k conv + bias + SiLU + SE sums
    gate     = excitation(sums)                               # (N, C) float32 (or float64), tiny
    out      = pointwise(dw, gate=gate, residual=x)           # the gate scales the weight tile

Each full-size tensor is written once and read once; nothing is written for BN, SiLU, the SE
pool or `x * gate`. The stem, with the input cast, is one Triton pass too (`effnet.fast.stem`; `fuse_stem=False`
keeps the cast and the folded PyTorch stem), and the head conv one library product with its bias in the
product's epilogue (`FusedHead`). Other block types run the folded PyTorch modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effnet.export.fold import fold_batchnorm
from effnet.fast import ops
from effnet.fast.expansion import MAX_RECOMPUTE
from effnet.fast.stem import stem
from effnet.models.blocks import MBConv
from effnet.models.layers import SameConv2d
from effnet.models.network import EfficientNet


class FusedMBConv(nn.Module):
    """A folded MBConv block (eval mode, SiLU) run through `effnet.fast.ops`."""

    def __init__(self, block: MBConv, use_triton: bool | None = None, fuse_expansion: bool = False) -> None:
        super().__init__()
        self.use_triton = use_triton
        self.expands, self.has_se, self.has_skip = block.expands, block.has_se, block.has_skip
        if self.expands:
            self.conv_pw = block.conv_pw
            self.register_buffer("pw_t", _columns(block.conv_pw), persistent=False)
        self.conv_dw = block.conv_dw
        self.register_buffer("dw_taps", _taps(block.conv_dw), persistent=False)
        self.stride = block.conv_dw.stride[0]
        kernel = block.conv_dw.kernel_size[0]
        # The expansion recomputed per depthwise tap instead of stored, where that costs little.
        self.fuse_expansion = fuse_expansion and self.expands and kernel ** 2 <= MAX_RECOMPUTE * self.stride ** 2
        self.same = isinstance(block.conv_dw, SameConv2d)
        self.se = block.se if self.has_se else None
        self.conv_pwl = block.conv_pwl
        self.register_buffer("pwl_t", _columns(block.conv_pwl), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        # The depthwise taps stay float32 through `.to(dtype)`: the conv's weights, rounded to their dtype (the
        # same products), which the kernels take without converting each tap's values (`_taps`).
        super()._apply(fn, *args, **kwargs)
        self.dw_taps = _taps(self.conv_dw)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.fuse_expansion:
            x, sums = ops.expand_depthwise(x, (self.conv_pw.weight, self.pw_t, self.conv_pw.bias),
                                           (self.conv_dw.weight, self.dw_taps, self.conv_dw.bias), stride=self.stride,
                                           same=self.same, pool=self.has_se,
                                           use_triton=self.use_triton)  # (N, mid, H/s, W/s)
        else:
            if self.expands:
                x = ops.pointwise(x, self.conv_pw.weight, self.pw_t, self.conv_pw.bias, act=True,
                                  use_triton=self.use_triton)  # (N, mid, H, W)
            x, sums = ops.depthwise(x, self.conv_dw.weight, self.dw_taps, self.conv_dw.bias, stride=self.stride,
                                    same=self.same, pool=self.has_se,
                                    use_triton=self.use_triton)  # (N, mid, H/s, W/s)
        gate = None
        if self.has_se:
            gate = ops.excitation(sums, x.shape[2] * x.shape[3], self.se.conv_reduce, self.se.conv_expand,
                                  use_triton=self.use_triton, tf32=x.dtype in (torch.bfloat16, torch.float16))
        return ops.pointwise(x, self.conv_pwl.weight, self.pwl_t, self.conv_pwl.bias, act=False, gate=gate,
                             residual=shortcut if self.has_skip else None, use_triton=self.use_triton,
                             gate_in_place=True)  # (N, out, H/s, W/s)


class FusedStem(nn.Module):
    """A folded stem conv and its SiLU as one pass over the raw input (`effnet.fast.stem.stem`).

    Keeps the conv's `weight` and `bias` under their own names, so the state dict's keys are those
    of the unfused fast model (`conv_stem.weight`, `conv_stem.bias`).
    """

    def __init__(self, conv: nn.Conv2d, use_triton: bool | None = None) -> None:
        super().__init__()
        self.use_triton = use_triton
        self.weight, self.bias = conv.weight, conv.bias
        self.register_buffer("weight_cols", _columns(conv), persistent=False)
        self.stride = conv.stride[0]
        self.same = isinstance(conv, SameConv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stem(x, self.weight, self.weight_cols, self.bias, stride=self.stride, same=self.same,
                    use_triton=self.use_triton)  # (N, stem, H/s, W/s)


class FusedHead(nn.Module):
    """A folded 1x1 head conv as one library matrix product with the bias in the product's epilogue, then the
    SiLU in place. PyTorch's conv with a bias adds it in a pass of its own: on an H200
    (benchmarks/RESULTS.md, run 8) B0's head at batch 256 took the product 21 us, that add 36 us and the SiLU
    17 us, B4's at batch 128 48, 94 and 35 us. Keeps the conv's `weight` and `bias` under their own names, so
    the state dict's keys are those of the unfused fast model (`conv_head.weight`, `conv_head.bias`)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.register_buffer("weight_t", _columns(conv), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        y = torch.addmm(self.bias, x.permute(0, 2, 3, 1).reshape(-1, channels), self.weight_t)  # (pixels, features)
        y = F.silu(y, inplace=not torch.is_grad_enabled())
        return y.view(batch, height, width, -1).permute(0, 3, 1, 2)  # (N, features, H, W), channels-last


def _plain_head(model: EfficientNet) -> bool:
    """Whether the folded model's head is what `FusedHead` computes: a 1x1 conv with a bias, then a SiLU."""
    conv = model.conv_head
    return (model.has_head_conv and type(conv) in (nn.Conv2d, SameConv2d) and conv.kernel_size == (1, 1)
            and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1 and conv.bias is not None
            and isinstance(model.bn2, nn.Identity) and isinstance(model.act2, nn.SiLU))


def _taps(conv: nn.Conv2d) -> torch.Tensor:
    """A depthwise conv's weights as (k*k, C) float32 columns: its values in the weights' dtype, widened. The
    depthwise kernels multiply in float32; with 16-bit taps each of k*k taps' weight vectors is converted
    before its products, one instruction a value, in kernels that the instruction count bounds (a 5 x 5
    depthwise kernel issues 14% fewer instructions with float32 taps: benchmarks/compile_check.py's SASS)."""
    return _columns(conv).float()


def _columns(conv: nn.Conv2d) -> torch.Tensor:
    """The conv's weights with output channels last: (in, out) for a 1x1 conv, (k*k, C) for a depthwise
    one, (in*k*k, out) for a full k x k one."""
    return conv.weight.detach().flatten(1).t().contiguous()


class ChannelsLastInput(nn.Module):
    """Casts the input to the model's dtype and channels-last layout, then runs the model.

    With `cast=False` the input goes in as given: a `FusedStem` reads any float dtype and layout.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, cast: bool = True) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.cast = cast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cast:
            x = x.to(dtype=self.dtype, memory_format=torch.channels_last)
        return self.model(x)


def optimize_for_inference(model: nn.Module, *, dtype: torch.dtype | None = None, fuse: bool = True,
                           use_triton: bool | None = None, fuse_expansion: bool = False,
                           fuse_stem: bool = True) -> nn.Module:
    """A copy of an effnet classifier for inference: BN folded, channels-last, fused MBConv blocks.

    `dtype` (e.g. torch.bfloat16) casts the weights; the returned module casts its input to match.
    With `fuse=False` only folding and the layout change are applied. Only SiLU MBConv blocks are
    fused (Lite's ReLU6 blocks, MobileNet and ResNet blocks run as folded PyTorch modules).
    `fuse_expansion` (experimental) also folds each block's expansion into its depthwise pass where
    the recomputation is cheap (`effnet.fast.expansion`). `fuse_stem` (the default) runs a SiLU stem
    as one pass that reads the input as given, in place of the input cast, conv and SiLU
    (`effnet.fast.stem`; on an H100 0.69 ms of B0's 7.85 ms bf16 forward at batch 256, RESULTS.md run 5);
    the input cast stays where the stem is not fused (`fuse_stem=False`, Lite's ReLU6 stems). A SiLU head
    conv becomes one matrix product with its bias in the epilogue and the SiLU in place (`FusedHead`).
    """
    if not isinstance(model, EfficientNet):
        from effnet.export.errors import ExportError

        raise ExportError(f"optimize_for_inference needs an effnet classifier, got {type(model).__name__}")
    if dtype is not None and not dtype.is_floating_point:
        from effnet.export.errors import ExportError

        raise ExportError(f"dtype must be a floating-point dtype (torch.bfloat16, torch.float32, ...), got {dtype}")
    folded = fold_batchnorm(model)
    if fuse:
        for stage in folded.blocks:
            for index, block in enumerate(stage):
                if isinstance(block, MBConv) and isinstance(block.act2, nn.SiLU):
                    stage[index] = FusedMBConv(block, use_triton, fuse_expansion)
    stem_fused = fuse and fuse_stem and isinstance(folded.act1, nn.SiLU)
    if stem_fused:
        folded.conv_stem = FusedStem(folded.conv_stem, use_triton)
        folded.act1 = nn.Identity()
    if fuse and _plain_head(folded):
        folded.conv_head = FusedHead(folded.conv_head)
        folded.act2 = nn.Identity()
    dtype = dtype or next(model.parameters()).dtype
    folded = folded.to(dtype=dtype, memory_format=torch.channels_last)
    for module in folded.modules():  # the excitation runs in float32 or wider, whatever the dtype
        if isinstance(module, FusedMBConv) and module.se is not None:
            module.se.to(ops.at_least_float32(dtype))
    return ChannelsLastInput(folded, dtype, cast=not stem_fused).eval()


def optimize_for_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`optimize_for_inference` on `device`, in the dtype the fast path runs there: bf16 on a GPU, float32
    elsewhere. What `effnet predict`, `eval` and `scale --max-latency-ms` run with `--backend fast`."""
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return optimize_for_inference(model, dtype=dtype).to(device)  # a copy: `model` stays where it is
