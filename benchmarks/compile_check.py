"""Compile the Triton kernels for a GPU without one: fused training's and the inference path's, bf16.

    PYTHONPATH=src python benchmarks/compile_check.py                 # sm_90 (H100), 30 kernels, about a minute
    PYTHONPATH=src python benchmarks/compile_check.py --arch 80 --only bn_depthwise
    PYTHONPATH=src python benchmarks/compile_check.py --sweeps    # the tiles bn_pointwise_sweep.py tries

Triton's interpreter (how the tests run the kernels on CPU) executes them as NumPy code, so it cannot
see what only the GPU compiler does: layout and shape rules of `tl.dot` and of 3-D blocks, shared memory,
and above all registers. This script lowers each kernel of `effnet.fast.bn_pointwise`,
`effnet.fast.se_projection` and `effnet.fast.bn_depthwise` as a training step of B0 and of B4 (batch
128) launches it, every distinct compilation once (named by the first layer that needs it), and the
inference path's depthwise and 1x1 kernels (`effnet.fast.kernels`, timed on H100s since run 1), with
their default tiles through Triton's CUDA backend to a cubin (ptxas ships with Triton), and prints
what each program needs: registers per thread, spilled bytes (local memory), shared memory. A kernel
that fails to compile is one failed line and exit status 1; a spill is a warning (slow, not wrong).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be JIT functions, not interpreted ones

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from effnet.fast import bn_depthwise as bnd  # noqa: E402
from effnet.fast import bn_pointwise as bnp  # noqa: E402
from effnet.fast import bn_stats as bns  # noqa: E402
from effnet.fast import kernels  # noqa: E402
from effnet.fast import se_projection as sep  # noqa: E402

# Pointers to activations and weights are bf16 (as training under bf16 autocast hands them over); the
# statistics, affine maps, gates and partial sums are float32.
HALF_POINTERS = {"x_ptr", "w_ptr", "y_ptr", "dy_ptr", "dx_ptr", "a_ptr", "b_ptr", "bias_ptr", "res_ptr", "out_ptr"}
# Arguments of the batch norms' (C,) kernels (bn_stats) that are neither bf16 tensors nor integers.
TYPES = {"_affine_kernel": {"bias_ptr": "*fp32", "tracked_ptr": "*i64", "eps": "fp32", "momentum": "fp32",
                            "unbias": "fp32"},
         "_affine_backward_kernel": {"eps": "fp32"}, "_gradient_rows_kernel": {"out_ptr": "*fp32", "n": "fp32"}}


# The models whose training layers the check walks, each at its own resolution, batch 128.
MODELS = ("efficientnet_b0", "efficientnet_b4")


def _blocks(model_name: str) -> list[tuple[object, torch.Size, torch.Size]]:
    """(block, depthwise input shape, depthwise output shape) of each MBConv of the model at its resolution,
    batch 128: the shapes the fused training passes see."""
    import effnet
    from effnet.models.blocks import MBConv

    model = effnet.create_model(model_name).eval()
    shapes = {}
    hooks = [block.conv_dw.register_forward_hook(
        lambda module, inputs, output, block=block: shapes.__setitem__(block, (inputs[0].shape, output.shape)))
        for block in model.modules() if isinstance(block, MBConv)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, model.spec.resolution, model.spec.resolution))
    for hook in hooks:
        hook.remove()
    return [(block, torch.Size((128, *i[1:])), torch.Size((128, *o[1:]))) for block, (i, o) in shapes.items()]


def _training_variants(model_name: str) -> list[tuple[str, object, dict, dict]]:
    """(name, kernel, constexprs, launch options) of every fused-training kernel launch a training step of the
    model makes with the modules' default tiles, one per distinct compilation (named by its first layer)."""
    variants = []
    for index, (block, dw_in, dw_out) in enumerate(_blocks(model_name)):
        where = f"{model_name} block {index}"
        dw_x = torch.empty(dw_in, device="meta")
        layers = []  # (role, 1x1 input (meta), out channels, flags)
        if block.expands:
            cin = block.conv_pw.in_channels
            layers.append(("expansion", torch.empty((128, cin, *dw_in[2:]), device="meta"), dw_in[1],
                           dict(AFFINE=False, ACT=False, GATE=False)))
        layers.append(("projection", torch.empty(dw_out, device="meta"), block.conv_pwl.out_channels,
                       dict(AFFINE=True, ACT=True, GATE=block.has_se)))
        for role, x, cout, flags in layers:
            scale = torch.empty(x.shape[1], device="meta") if flags["AFFINE"] else None
            for op, kernel in (("bn_pointwise", bnp._pw_forward_kernel),
                               ("bn_pointwise_input_grad", bnp._pw_input_grad_kernel),
                               ("bn_pointwise_weight_grad", bnp._pw_weight_grad_kernel)):
                block_m, block_n, block_k, warps, stages = bnp._tiles(op, x, cout, scale)
                # The projection's input gradient adds the SE pool's gradient (se_projection).
                pool = {"POOL": flags["GATE"]} if kernel is bnp._pw_input_grad_kernel else {}
                variants.append((f"bn_pointwise {kernel.fn.__name__} ({where} {role})", kernel,
                                 {**flags, **pool, "IEEE": False, "BLOCK_M": block_m, "BLOCK_N": block_n,
                                  "BLOCK_K": block_k}, {"num_warps": warps, "num_stages": stages}))
        if block.has_se:
            block_m, block_k, warps = sep._POOL_TILES
            variants.append((f"se_projection _se_pool_kernel ({where})", sep._se_pool_kernel,
                             {"BLOCK_M": block_m, "BLOCK_K": block_k}, {"num_warps": warps}))
        k, stride = block.conv_dw.kernel_size[0], block.conv_dw.stride[0]
        geometry = dict(K=k, STRIDE=stride)
        for op, kernel, flags in (("bn_depthwise", bnd._dw_forward_kernel, {}),
                                  ("bn_depthwise_input_grad", bnd._dw_input_grad_kernel,
                                   dict(AFFINE=block.expands, ACT=True))):
            block_h, block_w, block_c, warps = bnd._tiles(op, dw_x, k, stride)
            variants.append((f"bn_depthwise {kernel.fn.__name__} ({where}, k{k} s{stride})", kernel,
                             {**geometry, **flags, "BLOCK_H": block_h, "BLOCK_W": block_w, "BLOCK_C": block_c},
                             {"num_warps": warps}))
        _, block_h, block_w, block_c, warps = bnd._tiles("bn_depthwise_weight_grad", dw_x, k, stride)
        variants.append((f"bn_depthwise _dw_weight_grad_kernel ({where}, k{k} s{stride})", bnd._dw_weight_grad_kernel,
                         {**geometry, "KK": triton.next_power_of_2(k * k), "BLOCK_H": block_h, "BLOCK_W": block_w,
                          "BLOCK_C": block_c}, {"num_warps": warps}))
        if block.expands:
            block_m, block_c = bnd._activate_tiles(dw_in[1])
            variants.append((f"bn_depthwise _dw_activate_kernel ({where})", bnd._dw_activate_kernel,
                             dict(ACT=True, BLOCK_M=block_m, BLOCK_C=block_c), {"num_warps": 4}))
    return variants


def _variants(models: tuple[str, ...] = MODELS) -> list[tuple[str, object, dict, dict]]:
    """(name, kernel, constexprs, launch options): each distinct compilation of the fused training kernels
    for the models' layers (batch 128), then the inference path's kernels on a mid-sized B0 layer (28 px,
    240 channels; these have run on H100s since run 1)."""
    variants, seen = [], set()
    for model_name in models:
        for name, kernel, constexprs, options in _training_variants(model_name):
            key = (kernel.fn.__module__, kernel.fn.__name__, tuple(sorted(constexprs.items())),
                   tuple(sorted(options.items())))
            if key not in seen:
                seen.add(key)
                variants.append((name, kernel, constexprs, options))
    # The batch norms' arithmetic on (C,) vectors (bn_stats), as the fused training path launches it.
    merge = dict(BLOCK_R=64, BLOCK_C=64)
    for name, kernel, constexprs in (("_merge_kernel (chunks)", bns._merge_kernel, dict(FINAL=False, **merge)),
                                     ("_merge_kernel (final)", bns._merge_kernel, dict(FINAL=True, **merge)),
                                     ("_affine_kernel", bns._affine_kernel, dict(TRACK=True, BLOCK=bns._VECTOR_BLOCK)),
                                     ("_affine_backward_kernel", bns._affine_backward_kernel,
                                      dict(DSCALE=True, DSHIFT=True, BLOCK=bns._VECTOR_BLOCK)),
                                     ("_gradient_rows_kernel", bns._gradient_rows_kernel,
                                      dict(DMEAN=True, DVAR=True, BLOCK=bns._VECTOR_BLOCK))):
        variants.append((f"bn_stats {name}", kernel, constexprs, {"num_warps": 4}))
    # The inference path (effnet-fast): depthwise + SiLU + SE sums, and the projection with the gate on its
    # weight tile and the residual.
    for k in (3, 5):
        block_h, block_w, block_c, rows, warps = kernels._depthwise_tiles(k, 28, 240)
        variants.append((f"kernels _depthwise_kernel (k{k})", kernels._depthwise_kernel,
                         dict(K=k, ACT=True, POOL=True, BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_C=block_c, ROWS=rows),
                         {"num_warps": warps}))
    block_m, block_n, block_k, warps, stages = kernels._pointwise_tiles(28 * 28, 240, 40, 2)
    variants.append(("kernels _pointwise_kernel (projection)", kernels._pointwise_kernel,
                     dict(GATE=2, ACT=False, RESIDUAL=True, IEEE=False, BLOCK_M=block_m, BLOCK_N=block_n,
                          BLOCK_K=block_k), {"num_warps": warps, "num_stages": stages}))
    return variants


def _sweep_variants() -> list[tuple[str, object, dict, dict]]:
    """(name, kernel, constexprs, launch options) of every tile set `bn_pointwise_sweep.py` tries, for an
    expansion and for a gated projection (the two kinds of 1x1 layer in B0 and B4)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bn_pointwise_sweep import SWEEP

    kinds = {"expansion": dict(AFFINE=False, ACT=False, GATE=False), "projection": dict(AFFINE=True, ACT=True, GATE=True)}
    kernels_by_op = {"bn_pointwise": bnp._pw_forward_kernel, "bn_pointwise_input_grad": bnp._pw_input_grad_kernel,
                     "bn_pointwise_weight_grad": bnp._pw_weight_grad_kernel}
    variants = []
    for op, tile_sets in SWEEP.items():
        kernel = kernels_by_op[op]
        for role, flags in kinds.items():
            pool = {"POOL": flags["GATE"]} if kernel is bnp._pw_input_grad_kernel else {}
            for block_m, block_n, block_k, warps, stages in tile_sets:
                variants.append((f"sweep {kernel.fn.__name__} {role} {(block_m, block_n, block_k, warps, stages)}",
                                 kernel, {**flags, **pool, "IEEE": False, "BLOCK_M": block_m, "BLOCK_N": block_n,
                                          "BLOCK_K": block_k}, {"num_warps": warps, "num_stages": stages}))
    return variants


def compile_kernel(kernel, constexprs: dict, options: dict, arch: int):
    """The compiled kernel for CUDA compute capability `arch` (e.g. 90), all pointers as in HALF_POINTERS."""
    signature = {name: "constexpr" if name in constexprs else
                 ("*bf16" if name in HALF_POINTERS else "*fp32") if name.endswith("_ptr") else "i32"
                 for name in kernel.arg_names}
    signature.update(TYPES.get(kernel.fn.__name__, {}))
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                          target=GPUTarget("cuda", arch, 32), options=options)


def resource_usage(compiled) -> dict[str, int]:
    """Registers, stack (spill) bytes and shared memory of a compiled kernel, from cuobjdump's view of its cubin."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        text = subprocess.run([str(cuobjdump), "-res-usage", cubin.name], capture_output=True, text=True).stdout
    usage = {key.lower(): int(value) for key, value in re.findall(r"(REG|STACK|LOCAL):(\d+)", text)}
    return {**usage, "shared": compiled.metadata.shared}  # Triton's shared memory is dynamic: its own count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, major*10+minor (90: H100)")
    parser.add_argument("--only", help="compile only the variants whose name contains this")
    parser.add_argument("--sweeps", action="store_true",
                        help="compile the tile sets bn_pointwise_sweep.py tries instead of the defaults")
    args = parser.parse_args()
    failed = 0
    for name, kernel, constexprs, options in (_sweep_variants() if args.sweeps else _variants()):
        if args.only and args.only not in name:
            continue
        start = time.time()
        try:
            usage = resource_usage(compile_kernel(kernel, constexprs, options, args.arch))
        except Exception as error:  # noqa: BLE001 - each kernel's failure is one line, the rest still compile
            failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1]}", flush=True)
            continue
        spilled = usage.get("stack", 0) + usage.get("local", 0)
        print(f"ok   {name:55} {usage.get('reg', 0):4} registers, {spilled:5} bytes spilled, "
              f"{usage.get('shared', 0):6} bytes shared  ({time.time() - start:.1f} s)"
              + ("  (spills: slow)" if spilled else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
