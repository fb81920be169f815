"""Compile here, on CPU, the Triton kernels the next GPU lease will launch, into the cache that lease starts from.

Run 5 spent about half of its first call compiling, and run 7's checks 163 s. Compiling takes no GPU: Triton
compiles for sm_90 anywhere (`compile_check.py` does). Triton files each kernel in its cache under a hash of
the kernel's source, its specialisation (argument types, constants, alignments), the compiler options and
Triton itself. So this script runs the lease's code paths on PyTorch's meta device, with a stand-in driver
for an H100, and lets Triton's JIT specialise each launch as it would there (`compile_check._specialise`:
`JITFunction`'s own binder). It
compiles each distinct kernel into CACHE/triton with the lease's Triton version, binaries only (the cubin and
its metadata: all a launch loads).

Triton's hash of itself includes its compiled library, which is built per Python version, and the lease runs
Python 3.12. So the hash is taken from the lease's wheel (`--lease-wheel`: Triton for CPython 3.12), while the
kernels compile with this machine's Triton of the same version: the same compiler, the same binaries.
Checked against run 7's returned cache: with run 7's code, 90 of the 179 keys computed here were there. The
rest had been left out of its pack, which keeps the newest entries.

What it compiles (`--stages`, all six unless given), once with each tuning file a lease may start from
(`START_TUNING`: run 7's on an H100, run 9's on an H200; `--tuning`), so with each file's choices:
- `inference`: the inference stage's sweeps as gpu_lease.sh runs them (`LEASE_SWEEPS`, run on the meta
  device), then B0's and B4's fused forwards at the rows' batches.
- `train`: the fused training step (`compile_check`'s walk) of B0 at batches 256 and 128 and of B4 at 64 (the
  train, rows and b4train stages), gpu_check's gradient checks (B0 at 128 px, float32 and bf16; a small B0), the
  loop stage's fused `effnet train --cuda-graphs` test (B0 at phi -3, 16 px), the `effnet-tdw` steps its
  profiles run (B0 at 128, B4 at 64) and the "activations" memory saver's Triton passes (B0 at 256, B4 at 64).
- `sweeps`, `pwtrain`, `dwforms` and `b4train`: those stages' sweeps of the fused training passes, on the meta
  device.
A launch this misses compiles on the lease as before.

    .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 -d /tmp/lease triton==3.6.0            # the lease's Triton, for its hash
    .venv/bin/pip install --no-deps --target /tmp/site36 triton==3.6.0           # the same version, here
    PYTHONPATH=/tmp/site36:src .venv/bin/python benchmarks/precompile.py --lease-wheel /tmp/lease/triton-*.whl
    python3 benchmarks/compile_cache.py pack /tmp/effnet_compile_cache .compile_cache

CACHE must be the folder the lease's `with_compile_cache.sh` restores into (/tmp/effnet_compile_cache): a
cache entry names its files by absolute path. `--prune` first drops the effnet kernels of an earlier lease's
cache there that this run does not compile (their sources have changed), keeping Inductor's.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pkgutil
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO

CACHE = "/tmp/effnet_compile_cache"  # with_compile_cache.sh's folder on the lease
os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_CACHE_DIR", f"{CACHE}/triton")
os.environ["TRITON_STORE_BINARY_ONLY"] = "1"  # the cubin and its metadata: what a launch loads
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

import torch  # noqa: E402
import triton  # noqa: E402
from triton._C.libtriton import get_cache_invalidating_env_vars  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime import cache as triton_cache  # noqa: E402

import compile_check  # noqa: E402
from gpu_check import small_b0  # noqa: E402
from effnet.fast import tuning  # noqa: E402

# The sweeps of gpu_lease.sh's stages as it calls them (tests/test_precompile.py holds the two to each other): the
# script and its arguments, less --tuning and --out.
LEASE_SWEEPS = {
    "inference": [
        ("depthwise_sweep", ["--configs", "2", "--warm-configs", "1", "--banded-configs", "0"]),
        ("pointwise_sweep", ["--configs", "0", "--stream-configs", "0", "--layers", "3", "4", "6", "8", "9", "10",
                             "11", "12", "13", "14", "15", "16", "17"]),
        ("pointwise_sweep", ["--model", "efficientnet_b4", "--size", "380", "--batch", "128", "--configs", "0",
                             "--stream-configs", "0", "--layers", "17", "18", "19", "20"]),
        ("depthwise_sweep", ["--model", "efficientnet_b4", "--size", "380", "--batch", "128", "--configs", "2",
                             "--warm-configs", "1", "--banded-configs", "1"]),
        ("stem_sweep", []),
        ("stem_sweep", ["--model", "efficientnet_b4", "--size", "380", "--batch", "128"]),
        ("excitation_sweep", []),
        ("excitation_sweep", ["--model", "efficientnet_b4", "--batch", "128"])],
    "sweeps": [("bn_pointwise_sweep", ["--configs", "3", "--no-compile"]),
               ("bn_depthwise_sweep", ["--configs", "3", "--no-compile"])],
    "pwtrain": [("bn_pointwise_sweep", ["--configs", "6", "--no-compile"])],
    "dwforms": [("bn_depthwise_sweep", ["--configs", "0", "--no-compile"]),
                ("bn_depthwise_sweep", ["--model", "efficientnet_b4", "--size", "380", "--batch", "64", "--configs",
                                        "0", "--no-compile", "--layers", "3", "6", "7", "9", "12"])],
    "b4train": [("bn_pointwise_sweep", ["--model", "efficientnet_b4", "--size", "380", "--batch", "64", "--configs",
                                        "0", "--wave-configs", "0", "--role", "project", "--no-compile"])],
}
STAGES = ("inference", "train", *(stage for stage in LEASE_SWEEPS if stage != "inference"))
# (model, batch) of the rows' fused forwards (gpu_check's plan).
FORWARDS = [("efficientnet_b0", 256), ("efficientnet_b4", 128)]
# (model, batch, resolution (None: the model's), activation dtype) of the fused training steps: the rows' (B0 captured
# at 256, its profile at 128, B4 at 64), then gpu_check's gradient checks (B0 at 128 px, batch 16, in float32 and
# under bf16 autocast; a narrow, shallow B0 compiled, float32).
TRAINING = [("efficientnet_b0", 256, None, torch.bfloat16), ("efficientnet_b0", 128, None, torch.bfloat16),
            ("efficientnet_b4", 64, None, torch.bfloat16), ("efficientnet_b0", 16, 128, torch.float32),
            ("efficientnet_b0", 16, 128, torch.bfloat16), ("b0_small", 16, 128, torch.float32),
            ("b0_phi-3", 32, 16, torch.float32)]  # the last: `effnet train --phi -3 --fused-training` on the digits


def tiny_b0():
    """`effnet train --phi -3`'s B0: the loop stage's fused `--cuda-graphs` test trains it on the built-in digits
    (16 px, batch 32, float32; tests/test_train_graphed.py)."""
    from effnet.models import get_entry
    from effnet.scaling import scale_by_phi

    return scale_by_phi(get_entry("efficientnet_b0").spec, -3)


SPECS = {"b0_small": small_b0, "b0_phi-3": tiny_b0}  # TRAINING's models that are specs, not registered names
# The tuning files gpu_lease.sh starts from, by card: the last measured on each (its choices' kernels compile too).
START_TUNING = [HERE / "results" / "2026-11-27_h100_run7_tuning.json",
                HERE.parent / "src" / "effnet" / "fast" / "tuned" / "NVIDIA_H200.json"]  # run 9's, shipped


class PrecompileError(Exception):
    """A user mistake: one line, no traceback."""


def lease_triton_key(library: BinaryIO) -> str:
    """`triton.runtime.cache.triton_key()` as the lease computes it: this Triton's Python sources (the same in
    every wheel of a version) and the lease's compiled library (`library`, read to its end)."""
    root = Path(triton.__file__).parent
    contents = [hashlib.sha256(Path(triton_cache.__file__).read_bytes()).hexdigest()]
    for folder, prefix in ((root / "compiler", "triton.compiler."), (root / "backends", "triton.backends.")):
        for module in pkgutil.walk_packages([str(folder)], prefix=prefix):
            origin = module.module_finder.find_spec(module.name).origin
            contents.append(hashlib.sha256(Path(origin).read_bytes()).hexdigest())
    digest = hashlib.sha256()
    while chunk := library.read(1 << 20):
        digest.update(chunk)
    contents.append(digest.hexdigest())
    for module in pkgutil.walk_packages([str(root / "language")], prefix="triton.language."):
        origin = module.module_finder.find_spec(module.name).origin
        contents.append(hashlib.sha256(Path(origin).read_bytes()).hexdigest())
    return triton.__version__ + "-".join(contents)


class Compiler:
    """Takes each launch the JIT would make, specialised by the JIT's own binder, and compiles it once."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # cache folder -> kernel name
        self.compiled = self.hits = 0

    def __call__(self, kernel, args: tuple, kwargs: dict) -> None:
        launch = compile_check._specialise(kernel, args, kwargs, "precompile")
        source = ASTSource(kernel, launch.signature, launch.constexprs, launch.attrs)
        target, backend = kernel.device_caches[0][2:4]
        options = backend.parse_options(launch.options)
        key = triton_cache.get_cache_key(source, backend, options, get_cache_invalidating_env_vars())
        folder = triton_cache._base32(hashlib.sha256(key.encode()).hexdigest())
        if folder in self.keys:
            return
        self.keys[folder] = kernel.fn.__name__
        path = Path(os.environ["TRITON_CACHE_DIR"]) / folder
        cached = path.is_dir()
        triton.compile(source, target=target, options=options.__dict__)
        for text in path.glob("*.source"):  # the kernel's source as Triton first lowered it: a launch needs none
            text.unlink()
        self.hits += cached
        self.compiled += not cached


def _dry_sweep(script: str, argv: list[str], tuning_file: Path) -> None:
    """One sweep of the lease run on the meta device: each variant launched once (so compiled), nothing timed;
    its checks pass (no values to compare) and its winners go to a scratch copy of the tuning file."""
    module = __import__(script)
    module.relative_error = lambda output, reference: 0.0
    saved = sys.argv
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder) / "tuning.json"
        shutil.copy(tuning_file, scratch)
        sys.argv = [script, *argv, "--device", "meta", "--tuning", str(scratch)]
        try:
            with compile_check._catching([], script), contextlib.redirect_stdout(io.StringIO()):
                module.main()
        finally:
            sys.argv = saved


def _tdw_step(model_name: str) -> None:
    """The depthwise passes of an `effnet-tdw` training step (the plain model with Triton depthwise convs, which
    gpu_check profiles) at BATCH, bf16: forward, input and weight gradients of each depthwise conv."""
    from effnet.fast import depthwise_train as tdw

    for block, dw_in, dw_out in compile_check._blocks(model_name):
        k, stride = block.conv_dw.kernel_size[0], block.conv_dw.stride[0]
        x, dy = (compile_check._meta(*shape, channels_last=True) for shape in (dw_in, dw_out))
        taps = compile_check._meta(k * k, dw_in[1])
        geometry = dict(kernel_size=k, stride=stride, padding=block.conv_dw.padding)
        with compile_check._catching([], "effnet-tdw"):
            tdw._forward(x, taps, output_size=tuple(dw_out[2:]), **geometry)
            tdw.input_grad(dy, taps, tuple(dw_in[2:]), **geometry)
            tdw.weight_grad(x, dy, **geometry)


def _prune(cache: Path, keep: set[str]) -> int:
    """Drop the effnet kernels (not Inductor's, named triton_*) in the Triton cache that are not in `keep`."""
    dropped = 0
    for folder in cache.iterdir() if cache.is_dir() else ():
        names = [json.loads(f.read_text()).get("name", "") for f in folder.glob("*.json") if
                 not f.name.startswith("__grp__")]
        if folder.name not in keep and names and not names[0].startswith("triton_"):
            shutil.rmtree(folder)
            dropped += 1
    return dropped


def _stages(stages: list[str], tuning_file: Path, compiler: Compiler, start: float) -> None:
    """Every launch of the lease's `stages` with the choices of `tuning_file`, each compiled by `compiler`."""
    tuning.use(tuning_file)
    for stage in stages:
        for script, argv in LEASE_SWEEPS.get(stage, ()):
            _dry_sweep(script, argv, tuning_file)
            print(f"{script} {' '.join(argv)}: {len(compiler.keys)} kernels so far ({time.time() - start:.0f} s)",
                  flush=True)
    if "inference" in stages:
        for model, batch in FORWARDS:
            compile_check.BATCH = batch
            compile_check._inference_launches(model)
            print(f"{model} forward, batch {batch}: {len(compiler.keys)} kernels so far", flush=True)
    if "train" in stages:  # (every training form a file may pick: the walk launches the cuDNN forms' passes too)
        for model, batch, size, dtype in TRAINING:
            compile_check.BATCH, compile_check.SIZE, compile_check.DTYPE = batch, size, dtype
            compile_check._training_launches(SPECS[model]() if model in SPECS else model)
            print(f"{model} training step, batch {batch}, {size or 'its'} px, {dtype}: {len(compiler.keys)} kernels "
                  "so far", flush=True)
        for model, batch in (("efficientnet_b0", 128), ("efficientnet_b4", 64)):  # (gpu_check's profiles)
            compile_check.BATCH, compile_check.SIZE, compile_check.DTYPE = batch, None, torch.bfloat16
            _tdw_step(model)
            print(f"{model} effnet-tdw step, batch {batch}: {len(compiler.keys)} kernels so far", flush=True)
        for model, batch in (("efficientnet_b0", 256), ("efficientnet_b4", 64)):  # the effnet-activations rows
            compile_check.BATCH, compile_check.SIZE, compile_check.DTYPE = batch, None, torch.bfloat16
            compile_check.saver_launches(model)
            print(f"{model} activations saver step, batch {batch}: {len(compiler.keys)} kernels so far", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease-wheel", type=Path, required=True,
                        help="the lease's Triton wheel (for CPython 3.12), whose compiled library its cache keys hash")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--tuning", type=Path, nargs="+", default=START_TUNING,
                        help="the tuning files the lease may start from (their choices are compiled too)")
    parser.add_argument("--prune", action="store_true",
                        help="drop the effnet kernels of an earlier cache that this run does not compile")
    args = parser.parse_args()
    if not args.lease_wheel.is_file():
        raise PrecompileError(f"no wheel at {args.lease_wheel}")
    if args.prune and len(set(args.stages)) < len(STAGES):
        raise PrecompileError("--prune drops every effnet kernel this run does not compile: run all the stages")
    wheel_version = args.lease_wheel.name.split("-")[1]
    if wheel_version != triton.__version__:
        raise PrecompileError(f"the lease's Triton is {wheel_version}, this one {triton.__version__}: install "
                              f"triton=={wheel_version} here (pip install --target DIR, then PYTHONPATH=DIR:src)")
    try:
        with zipfile.ZipFile(args.lease_wheel) as wheel, wheel.open("triton/_C/libtriton.so") as library:
            key = lease_triton_key(library)
    except (zipfile.BadZipFile, KeyError):
        raise PrecompileError(f"{args.lease_wheel} is not a Triton wheel (no triton/_C/libtriton.so)") from None
    triton_cache.triton_key = lambda: key
    compiler = Compiler()
    compile_check.LAUNCH_WITH = compiler
    start = time.time()
    for tuning_file in args.tuning:  # each start file's choices: the stages' launches once per file
        print(f"with {tuning_file.name}:", flush=True)
        _stages(args.stages, tuning_file, compiler, start)
    cache = Path(os.environ["TRITON_CACHE_DIR"])
    dropped = _prune(cache, set(compiler.keys)) if args.prune else 0  # (every stage ran: checked above)
    print(f"{len(compiler.keys)} kernels for the lease in {cache} ({compiler.compiled} compiled, {compiler.hits} "
          f"there already; {dropped} stale effnet kernels dropped) in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PrecompileError as error:
        print(f"precompile: {error}", file=sys.stderr)
        sys.exit(2)
