"""The Triton kernels (fused training's and the inference path's) compile for an H100 (sm_90) here, without
a GPU: Triton's CUDA backend and the ptxas it ships lower each one with its default tiles to a cubin
(`benchmarks/compile_check.py`). The
interpreter the other kernel tests use runs NumPy code, blind to what only the GPU compiler checks (tl.dot's
and 3-D blocks' layout rules, shared memory, registers), so a kernel that cannot compile would otherwise first
fail on a lease."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton")


@pytest.mark.skipif(not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists(),
                    reason="this Triton ships no ptxas")
def test_every_kernel_compiles_for_sm90_and_reports_its_registers():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    # Without the SASS counts (no assertion reads them; disassembling is nine tenths of the script's time).
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile_check.py"), "--no-sass"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("ok ") and "registers" in line for line in lines), lines
    # Every depthwise geometry B0 and B4 train with, the SE pool, both 1x1 roles, the batch norms' arithmetic
    # and the inference path's kernels, as a training step and a forward launch them.
    for part in ("k3 s1", "k3 s2", "k5 s1", "k5 s2", "_se_pool_kernel", "_dw_activate_kernel", "expansion)",
                 "projection)", "_merge_kernel", "_affine_backward_kernel", "_stem_dot_kernel",
                 "kernels _depthwise_kernel (efficientnet_b4 inference block", "kernels _pointwise_kernel"):
        assert any(part in line for line in lines), part
    # Specialised as the JIT specialises a launch, and told what the host knows of the channel counts, every
    # kernel loads a channels-last row's bf16 channels in vectors, none one value (2 bytes) at a time: B0's
    # 24- and 40-channel maps and B4's 24- and 56-channel ones included.
    assert not [line for line in lines if "x2B" in line]
    # Every pipelined loop keeps a step's copies in flight while it computes: with two stages Triton awaits all
    # of them at each step (sessions 10 and 11's 1x1 gradient tiles did), and a program with one resident per
    # multiprocessor (the weight gradients' 200-odd registers) then leaves the memory idle while it multiplies.
    assert not [line for line in lines if "copies wait" in line]
    assert any("bn_pointwise_kernels _pw_weight_grad_kernel" in line and "copies overlap" in line for line in lines)
    # The bf16 kernels take their SiLU's sigmoid on the tanh instruction (one special-function op a value, not
    # exp and a division): the inference kernels, and since session 14 the training kernels' (whose backward
    # takes the same sigmoid for the derivative), the activation pass, the SE pool and the projection's passes.
    for kernel in ("_stem_dot_kernel", "kernels _depthwise_kernel", "kernels _pointwise_kernel (efficientnet_b0 "
                   "inference block 2)", "_streaming_kernel", "_se_pool_kernel", "_dw_activate_kernel",
                   "_pw_forward_kernel (efficientnet_b0 block 1 projection)",
                   "_pw_input_grad_kernel (efficientnet_b0 block 1 projection)",
                   "_pw_weight_grad_kernel (efficientnet_b0 block 1 projection)",
                   "_dw_input_grad_kernel (efficientnet_b0 block 1, k3 s2)"):
        assert any(kernel in line and "tanh SiLU" in line for line in lines), kernel
    # ... and only where there is a SiLU: not in an expansion (its input is the block's, raw).
    assert not [line for line in lines if "expansion)" in line and "tanh SiLU" in line]
    # The inference path's 1x1 products run on Hopper's asynchronous warpgroup instructions (wgmma), none on
    # Ampere's mma.sync, Triton's fallback for products under 64 rows.
    inference_1x1 = [line for line in lines if "kernels _pointwise_kernel" in line or "_streaming_kernel" in line]
    assert inference_1x1 and all(", wgmma" in line for line in inference_1x1), inference_1x1


def test_partial_sums_reports_every_reduction_of_a_fused_step_and_each_1x1_weight_gradient():
    """`benchmarks/partial_sums.py` walks a fused B0 training step on the meta device and sizes the partial sums its
    reductions read back: each reduction's line, a total that is their sum, and one row per 1x1 weight gradient
    (B0: 15 expansions and 16 projections) whose partials are 2 x chunks x in x out float32 values."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "partial_sums.py"), "--batch", "64"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    split = next(i for i, line in enumerate(lines) if line.startswith("1x1 weight gradients"))
    reductions = {line.split()[0]: float(line.split()[-2]) for line in lines[1:split] if " calls " in line
                  and not line.lstrip().startswith("in all")}
    total = next(line for line in lines if line.lstrip().startswith("in all"))
    assert {"bn_pointwise.py", "bn_depthwise.py", "bn_stats.merge_moments", "affine_grad.py"} <= {
        where.split(":")[0] for where in reductions}
    assert abs(sum(reductions.values()) - float(total.split()[-9])) <= 0.1 * len(reductions)
    rows = [line.split() for line in lines[split + 2:] if line.strip()]
    assert len(rows) == 31
    for cin, cout, _, _, chunks, partials, *_ in rows:
        assert abs(float(partials) - 2 * int(chunks) * int(cin) * int(cout) * 4 / 1e6) <= 0.06


def test_launch_binding_times_the_binder_of_every_launch_of_a_fused_step():
    """`benchmarks/launch_binding.py` binds each Triton launch of a fused B0 step (caught as compile_check catches
    them) with Triton's own binder and cache key: one summary line with a per-launch median and a step total, then
    the costliest kernels, whose launches add up to no more than the step's."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "launch_binding.py"), "--repeats", "2"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    summary, *kernels = result.stdout.splitlines()
    launches = int(summary.split(": ")[1].split()[0])
    assert launches > 400 and " us each (median), " in summary and summary.endswith(" ms a step")
    counts = [int(line.split()[1]) for line in kernels]
    assert len(kernels) == 8 and sum(counts) <= launches and any("_pw_input_grad_kernel" in line for line in kernels)
