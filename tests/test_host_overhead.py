"""`benchmarks/host_overhead.py` times the host's part of an eager fused training step on CPU: the code that issues
the kernels, which an eager step on a GPU waits on (run 7: 126.7 ms eager against 59.9 captured)."""
import os
import re
import subprocess
import sys
from pathlib import Path

from kernel_helpers import needs_triton

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "benchmarks" / "host_overhead.py")


@needs_triton
def test_host_overhead_times_a_fused_b0_step_with_its_triton_launches_counted_not_run():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, SCRIPT, "--steps", "2", "--profile", "5"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = re.search(r"([\d.]+) ms of host time a step .* (\d+) Triton launches not run", result.stdout)
    assert line, result.stdout[:2000]
    # every fused block's passes are Triton launches (B0: 456 a step in session 25), none of them run
    assert float(line.group(1)) > 0 and int(line.group(2)) > 300
    assert "five steps, by time of their own:" in result.stdout and "tottime" in result.stdout


def test_host_overhead_refuses_to_run_the_kernels_outside_the_interpreter():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, SCRIPT], env={**env, "PYTHONPATH": str(ROOT / "src")}, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "run under TRITON_INTERPRET=1" in result.stderr.strip().splitlines()[-1]
