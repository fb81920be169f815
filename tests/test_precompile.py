"""benchmarks/precompile.py fills the lease's Triton cache on CPU: its hash of Triton is Triton's own, a kernel it
takes compiles once into that cache for sm_90 (binaries only) and is found there the next time, and the sweeps it
runs are the ones the lease's inference call runs. Each in a fresh interpreter: the script sets Triton's cache
folder and takes TRITON_INTERPRET away, as the lease's processes have it."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_lease_scripts import calls

ROOT = Path(__file__).resolve().parents[1]
triton = pytest.importorskip("triton")


def _run(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'benchmarks'}", "PATH": "/usr/bin:/bin",
           "TRITON_CACHE_DIR": str(cache), "HOME": str(cache.parent)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _precompile(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/precompile.py run with `args`, its cache in tmp_path."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "TRITON_CACHE_DIR": str(tmp_path / "triton"),
           "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "precompile.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_lease_key_of_this_installs_library_is_tritons_own(tmp_path):
    """Given this machine's compiled library, the key precompile computes for the lease's is Triton's own
    `triton_key()`: the same sources and the same library hashed the same way."""
    result = _run("import precompile, triton\n"
                  "from pathlib import Path\n"
                  "from triton.runtime import cache\n"
                  "library = Path(triton.__file__).parent / '_C' / 'libtriton.so'\n"
                  "with open(library, 'rb') as f:\n"
                  "    assert precompile.lease_triton_key(f) == cache.triton_key()\n"
                  "print('same')", tmp_path / "triton")
    assert result.returncode == 0 and "same" in result.stdout, result.stderr[-3000:]


def test_a_launch_compiles_once_into_the_cache_and_is_found_there_next_time(tmp_path):
    cache = tmp_path / "triton"
    code = """
import torch, compile_check, precompile
from effnet.fast import kernels
compiler = precompile.Compiler()
compile_check.LAUNCH_WITH = compiler

def launch():
    x = torch.empty(4, 64, 7, 7, device="meta", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    weight_t = torch.empty(64, 32, device="meta", dtype=torch.bfloat16)
    with compile_check._catching([], "test"):
        kernels.pointwise(x, weight_t, torch.empty(32, device="meta", dtype=torch.bfloat16), act=True)

launch(); launch()
print(len(compiler.keys), compiler.compiled, compiler.hits)
again = compile_check.LAUNCH_WITH = precompile.Compiler()
launch()
print(len(again.keys), again.compiled, again.hits)
"""
    result = _run(code, cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", "1", "0", "1", "0", "1"]  # compiled once; found by a new process
    folder, = cache.iterdir()
    suffixes = {path.suffix for path in folder.iterdir() if not path.name.startswith("__grp__")}
    assert {".cubin", ".json"} <= suffixes and not suffixes & {".ptx", ".llir", ".ttgir"}  # no IR: binaries only
    assert re.fullmatch(r"[A-Z2-7]{52}", folder.name)  # Triton's own folder name: base32 of its key's hash


def test_precompile_runs_the_sweeps_of_the_leases_stages(tmp_path):
    """LEASE_SWEEPS holds what each stage of gpu_lease.sh sweeps (less the Nsight Compute calls, which launch
    kernels the sweeps compile anyway): a sweep added there and not here would compile on the lease."""
    result = _run("import json, precompile; print(json.dumps(precompile.LEASE_SWEEPS))", tmp_path / "triton")
    assert result.returncode == 0, result.stderr[-3000:]
    precompiled = {stage: [tuple(sweep) for sweep in sweeps]
                   for stage, sweeps in json.loads(result.stdout.splitlines()[-1]).items()}
    text = (ROOT / "benchmarks" / "gpu_lease.sh").read_text()
    for stage, sweeps in precompiled.items():
        section = text[text.index(f"\n  {stage})") if f"\n  {stage})" in text else text.index(f"\n  {stage}|"):]
        section = section[:section.index("\n    ;;")]
        lines = "\n".join(line for line in section.replace("\\\n", " ").splitlines() if "ncu_kernel" not in line)
        assert [(Path(script).stem, _without(argv, "--tuning", "--out")) for script, argv in calls(lines)
                if script.endswith("_sweep.py")] == sweeps, stage


def _without(argv: list[str], *options: str) -> list[str]:
    """argv less each of `options` and its value."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        else:
            kept.append(arg)
    return kept


def test_a_lease_sweep_runs_on_the_meta_device_and_compiles_its_variants(tmp_path):
    """precompile runs the lease's sweeps on the meta device: each variant launched once and compiled (here B0's
    first depthwise layer, the default tiles, the warmed taps, cuDNN's conv with its activation pass and the sliding
    window), nothing read back from a tensor."""
    code = """
import precompile
compiler = precompile.compile_check.LAUNCH_WITH = precompile.Compiler()
precompile._dry_sweep("depthwise_sweep", ["--layers", "0", "--configs", "0", "--warm-configs", "1",
                                          "--banded-configs", "0", "--sliding-configs", "1"],
                        precompile.START_TUNING[0])
print(sorted(compiler.keys.values()), compiler.compiled)
"""
    result = _run(code, tmp_path / "triton")
    assert result.returncode == 0, result.stderr[-3000:]
    # the activation pass beside cuDNN's conv, the default tiles and the warmed taps, the sliding window
    assert result.stdout.split("]")[0] == ("['_activate_pool_kernel', '_depthwise_kernel', '_depthwise_kernel', "
                                           "'_sliding_kernel'")


def test_pruning_after_some_stages_only_is_refused_in_one_line(tmp_path):
    """--prune drops every effnet kernel the run does not compile: after one stage it would drop the others'."""
    wheel = tmp_path / "triton-3.6.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    result = _precompile(tmp_path, "--lease-wheel", str(wheel), "--stages", "train", "--prune")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "precompile: --prune drops every effnet kernel this run does not compile: run all the stages"]
    assert not (tmp_path / "triton").exists()


def test_a_wheel_that_is_not_tritons_is_one_clear_line(tmp_path):
    wheel = tmp_path / "triton-3.6.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not a zip")
    version = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"], capture_output=True,
                             text=True).stdout.strip()
    wheel = wheel.rename(tmp_path / f"triton-{version}-cp312-cp312-manylinux_2_28_x86_64.whl")
    result = _precompile(tmp_path, "--lease-wheel", str(wheel))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"precompile: {wheel} is not a Triton wheel (no "
                                                  "triton/_C/libtriton.so)"]
