"""Compile the Triton kernels for a GPU without one: fused training's and the inference path's, bf16.

    PYTHONPATH=src python benchmarks/compile_check.py                 # sm_90 (H100), about a minute
    PYTHONPATH=src python benchmarks/compile_check.py --arch 80 --only bn_depthwise

Triton's interpreter (how the tests run the kernels on CPU) executes them as NumPy code, so it cannot
see what only the GPU compiler does: layout and shape rules of `tl.dot` and of 3-D blocks, shared memory,
and above all registers. This script lowers each kernel of `effnet.fast.bn_pointwise`,
`effnet.fast.se_projection` and `effnet.fast.bn_depthwise`, and the inference path's depthwise and 1x1
kernels (`effnet.fast.kernels`, timed on H100s since run 1), with their default tiles through Triton's
CUDA backend to a cubin (ptxas ships with Triton) and prints what each program needs: registers per
thread, spilled bytes (local memory), shared memory. A kernel that fails to compile is one failed line
and exit status 1; a spill is a warning (slow, not wrong).
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

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from effnet.fast import bn_depthwise as bnd  # noqa: E402
from effnet.fast import bn_pointwise as bnp  # noqa: E402
from effnet.fast import kernels  # noqa: E402
from effnet.fast import se_projection as sep  # noqa: E402

# Pointers to activations and weights are bf16 (as training under bf16 autocast hands them over); the
# statistics, affine maps, gates and partial sums are float32.
HALF_POINTERS = {"x_ptr", "w_ptr", "y_ptr", "dy_ptr", "dx_ptr", "a_ptr", "b_ptr", "bias_ptr", "res_ptr", "out_ptr"}


def _variants() -> list[tuple[str, object, dict, dict]]:
    """(name, kernel, constexprs, launch options) for each kernel and flag combination training uses, with the
    modules' own default tiles for two mid-sized B0 layers at batch 128: the 1x1 convs of a block at 28 px
    (40 -> 240 expansion, 240 -> 40 projection) and its depthwise conv (3 x 3 stride 1, 5 x 5 stride 2)."""
    import torch

    variants = []
    for role, cin, cout, flags in (("expansion", 40, 240, dict(AFFINE=False, ACT=False, GATE=False)),
                                   ("projection", 240, 40, dict(AFFINE=True, ACT=True, GATE=True))):
        x = torch.empty((128, cin, 28, 28), device="meta")
        scale = torch.empty(cin, device="meta") if flags["AFFINE"] else None
        for op, op_kernels in (("bn_pointwise", (bnp._forward_kernel,)),
                               ("bn_pointwise_backward", (bnp._input_grad_kernel, bnp._weight_grad_kernel))):
            block_m, block_n, block_k, warps, stages = bnp._tiles(op, x, cout, scale)
            for kernel in op_kernels:
                # The projection's input gradient adds the SE pool's gradient (se_projection).
                pool = {"POOL": flags["GATE"]} if kernel is bnp._input_grad_kernel else {}
                variants.append((f"bn_pointwise {kernel.fn.__name__} ({role})", kernel,
                                 {**flags, **pool, "IEEE": False, "BLOCK_M": block_m, "BLOCK_N": block_n,
                                  "BLOCK_K": block_k}, {"num_warps": warps, "num_stages": stages}))
    block_m, block_k, warps = sep._POOL_TILES
    variants.append(("se_projection _pool_kernel", sep._pool_kernel, {"BLOCK_M": block_m, "BLOCK_K": block_k},
                     {"num_warps": warps}))
    x = torch.empty((128, 240, 28, 28), device="meta")
    for k, stride in ((3, 1), (5, 2)):
        geometry = dict(K=k, STRIDE=stride)
        for op, kernel, flags in (("bn_depthwise", bnd._forward_kernel, {}),
                                  ("bn_depthwise_input_grad", bnd._input_grad_kernel, dict(AFFINE=True, ACT=True))):
            block_h, block_w, block_c, warps = bnd._tiles(op, x, k, stride)
            variants.append((f"bn_depthwise {kernel.fn.__name__} (k{k} s{stride})", kernel,
                             {**geometry, **flags, "BLOCK_H": block_h, "BLOCK_W": block_w, "BLOCK_C": block_c},
                             {"num_warps": warps}))
        _, block_h, block_w, block_c, warps = bnd._tiles("bn_depthwise_weight_grad", x, k, stride)
        variants.append((f"bn_depthwise _weight_grad_kernel (k{k} s{stride})", bnd._weight_grad_kernel,
                         {**geometry, "KK": triton.next_power_of_2(k * k), "BLOCK_H": block_h, "BLOCK_W": block_w,
                          "BLOCK_C": block_c}, {"num_warps": warps}))
    variants.append(("bn_depthwise _activate_kernel", bnd._activate_kernel, dict(ACT=True, BLOCK_M=64, BLOCK_C=64),
                     {"num_warps": 4}))
    # The inference path (effnet-fast) on the same layers: depthwise + SiLU + SE sums, and the projection with
    # the gate on its weight tile and the residual.
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


def compile_kernel(kernel, constexprs: dict, options: dict, arch: int):
    """The compiled kernel for CUDA compute capability `arch` (e.g. 90), all pointers as in HALF_POINTERS."""
    signature = {name: "constexpr" if name in constexprs else
                 ("*bf16" if name in HALF_POINTERS else "*fp32") if name.endswith("_ptr") else "i32"
                 for name in kernel.arg_names}
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
    args = parser.parse_args()
    failed = 0
    for name, kernel, constexprs, options in _variants():
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
