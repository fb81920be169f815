"""`benchmarks/launch_count.py` counts the kernels a training step launches on CPU, and the fused training step
keeps launching few PyTorch kernels: each small kernel costs a few microseconds on a GPU even in a CUDA graph,
and run 7's fused B0 step spent 4-5 of its 32.7 ms of kernels in about 720 of them."""
import json
import os
import subprocess
import sys
from pathlib import Path

from kernel_helpers import needs_triton

ROOT = Path(__file__).resolve().parents[1]


@needs_triton
def test_fused_step_launches_a_third_of_the_plain_steps_pytorch_kernels(tmp_path):
    out = tmp_path / "counts.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "launch_count.py"), "--width", "0.1",
                             "--size", "32", "--json", str(out)], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "effnet-ftrain:" in result.stdout and "Triton launches" in result.stdout
    counts = json.loads(out.read_text())["results"]
    plain, fused = counts["effnet"], counts["effnet-ftrain"]
    assert plain["triton"] == 0 and fused["triton"] > 100  # every fused block's passes are Triton kernels
    assert fused["pytorch"] * 2.5 < plain["pytorch"], (fused["pytorch"], plain["pytorch"])
    # Autograd casts no fused block's weight gradient back to float32 (the operators take the float32 weight);
    # what it casts is the stem's, the head's and the classifier's, as in the plain model (its 54 here).
    assert fused["by_line"].get("_to_copy autograd or loss", 0) < 10 < plain["by_line"]["_to_copy autograd or loss"]
    # Nor fills zeros for outputs no loss reaches, nor copies an activation for an in-place SiLU's backward.
    assert not {"zeros", "zeros_like", "zero_", "fill_", "clone"} & set(fused["by_name"])
    assert "clone" not in plain["by_name"]
