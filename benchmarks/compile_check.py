"""Compile the Triton kernels for a GPU without one: fused training's and the inference path's, bf16.

    PYTHONPATH=src python benchmarks/compile_check.py                 # sm_90 (H100), ~200 kernels, 1-2 minutes
    PYTHONPATH=src python benchmarks/compile_check.py --arch 80 --only bn_depthwise
    PYTHONPATH=src python benchmarks/compile_check.py --sweeps    # the tiles and variants the sweeps try
    PYTHONPATH=src python benchmarks/compile_check.py --no-sass   # without the SASS counts: ten times faster
    EFFNET_TUNING=FILE PYTHONPATH=src python benchmarks/compile_check.py    # the kernels a tuning file picks

Triton's interpreter (how the tests run the kernels on CPU) executes them as NumPy code, so it cannot see what
only the GPU compiler does: layout and shape rules of `tl.dot` and of 3-D blocks, shared memory, registers, and
how wide the loads are. This script runs the host code of a bf16 training step of B0 and of B4 (batch 128;
`effnet.fast.bn_pointwise`, `se_projection`, `bn_depthwise` and its cuDNN form's passes, `bn_stats`,
`block_output`) layer by layer on PyTorch's meta device, where no data exists, catching each kernel launch as the
Triton JIT would see it: its arguments specialised by the JIT's own binder (an integer 1 becomes a constant,
one divisible by 16 and 16-byte aligned pointers are marked so: what lets the compiler vectorise a channels-last
load), its tiles and launch options. Each distinct compilation (named by the first layer that needs it) and the
inference path's depthwise and 1x1 kernels (`effnet.fast.kernels`, timed on H100s since run 1) go through
Triton's CUDA backend to a cubin (ptxas ships with Triton), and each line prints what a program needs: registers
per thread, spilled bytes (local memory), shared memory, how full the multiprocessors are (warps resident per
multiprocessor, of 64, as registers and shared memory allow, and the launch's programs in waves of what 132 of
them hold at once), whether a pipelined loop's copies stay in flight while it computes ("copies overlap") or are
all awaited at each step ("copies wait"), the widths of its global loads (16 B: eight bf16 values per
instruction; 2 B: one), which tensor-core products it takes (Hopper's wgmma or Ampere's mma.sync, which Triton
falls back to for products under 64 rows), whether its SiLU runs on the tanh instruction, and its SASS
instructions (the static count: what a thread runs where the kernel has no loop). A kernel that fails to compile
is one failed line and exit status 1; a spill is a warning (slow, not wrong).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be JIT functions, not interpreted ones

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import triton  # noqa: E402
from torch import nn  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from effnet.fast import block_output as bo  # noqa: E402
from effnet.fast import bn_act  # noqa: E402
from effnet.fast import bn_depthwise as bnd  # noqa: E402
from effnet.fast import bn_depthwise_cudnn as bdc  # noqa: E402
from effnet.fast import bn_pointwise as bnp  # noqa: E402
from effnet.fast import bn_stats as bns  # noqa: E402
from effnet.fast import kernels, ops  # noqa: E402
from effnet.fast import se_projection as sep  # noqa: E402
from effnet.fast.affine_grad import affine_grad  # noqa: E402

# The models whose training layers the check walks, each at its own resolution, batch 128, bf16 activations
# (precompile.py walks others: SIZE, when set, is the resolution instead).
MODELS = ("efficientnet_b0", "efficientnet_b4")
BATCH = 128
DTYPE = torch.bfloat16
SIZE = None
SMS = 132  # an H100 SXM's multiprocessors: the weight gradient's split depends on them

Launch = collections.namedtuple("Launch", "name kernel signature constexprs attrs options programs")
# An sm_90 multiprocessor's limits on resident programs (CUDA occupancy calculator): registers, shared memory
# (228 KiB, 1 KiB of it reserved per program), warps and programs.
SM_REGISTERS, SM_SHARED, SM_WARPS, SM_PROGRAMS = 65536, 233472, 64, 32


# When set, a function (kernel, args, kwargs) that takes each launch `_catching` catches instead of recording it
# (benchmarks/precompile.py: the lease's compile cache).
LAUNCH_WITH = None


@contextlib.contextmanager
def _catching(launches: list, where):
    """Within: Triton kernel launches are not run but appended to `launches` (as `Launch`es named by `where`, a
    string or a function giving one), or handed to LAUNCH_WITH where it is set; the fast paths take meta tensors
    for a GPU's (autocast has no meta device: it is left out; 16-bit outputs take the tanh SiLU,
    `kernels.fast_silu`), and the GPU has SMS multiprocessors."""
    def run(kernel, *args, grid, warmup, **kwargs):
        if LAUNCH_WITH is not None:
            return LAUNCH_WITH(kernel, args, kwargs)
        launch = _specialise(kernel, args, kwargs, where() if callable(where) else where)
        grid = grid(dict(zip(kernel.arg_names, args), **kwargs)) if callable(grid) else grid
        launches.append(launch._replace(programs=math.prod(grid)))

    usable, fast_silu, autocast = kernels.usable, kernels.fast_silu, torch.autocast
    patches = [(JITFunction, "run", run),
               (kernels, "usable", lambda t: t.device.type == "meta" or usable(t)),
               (kernels, "fast_silu", lambda t: t.dtype in (torch.bfloat16, torch.float16) if t.device.type == "meta"
                else fast_silu(t)),
               (torch, "autocast", lambda device_type, *args, **kwargs: contextlib.nullcontext()
                if device_type == "meta" else autocast(device_type, *args, **kwargs)),
               (torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(multi_processor_count=SMS))]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class H100Driver:
    """The little of a Triton driver the JIT needs to specialise a launch: an sm_90 device, current."""

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)


driver.set_active(H100Driver())  # this script compiles for an H100 on any machine, a GPU or none


def _specialise(kernel, args: tuple, kwargs: dict, where: str) -> Launch:
    """The compilation the Triton JIT would make of this launch on an H100, by the JIT's own binder (as
    `JITFunction.run` makes it): signature, constants, alignment attributes and the full compiler options."""
    kwargs = dict(kwargs, debug=kwargs.get("debug", kernel.debug) or triton.knobs.runtime.debug,
                  instrumentation_mode=triton.knobs.compilation.instrumentation_mode)
    _, _, _, backend, binder = kernel.device_caches[0]
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    module = kernel.fn.__module__.rsplit(".", 1)[-1]
    return Launch(f"{module} {kernel.fn.__name__} ({where})", kernel, signature, constexprs, attrs,
                  options.__dict__, 0)


def _meta(*shape: int, dtype=None, channels_last: bool = False) -> torch.Tensor:
    t = torch.empty(shape, device="meta", dtype=dtype or DTYPE)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _shapes(model: nn.Module, modules: list[nn.Module]) -> dict[nn.Module, tuple[torch.Size, torch.Size]]:
    """(input shape, output shape) of each of `modules` in a forward of the model at its resolution (or SIZE), batch
    BATCH."""
    shapes = {}
    hooks = [module.register_forward_hook(lambda module, inputs, output: shapes.__setitem__(
        module, (torch.Size((BATCH, *inputs[0].shape[1:])), torch.Size((BATCH, *output.shape[1:])))))
        for module in modules]
    size = SIZE or model.spec.resolution
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return shapes


def _model_shapes(model_name) -> tuple[nn.Module, list, dict]:
    """(model, its MBConv blocks, `_shapes` of each block's depthwise conv and of the stem's and head's batch
    norms), from one forward of the model (a name or a spec)."""
    import effnet
    from effnet.models.blocks import MBConv

    model = effnet.create_model(model_name).eval()
    blocks = [block for block in model.modules() if isinstance(block, MBConv)]
    return model, blocks, _shapes(model, [*(block.conv_dw for block in blocks), model.bn1, model.bn2])


def _blocks(model_name) -> list[tuple[object, torch.Size, torch.Size]]:
    """(block, depthwise input shape, depthwise output shape) of each MBConv of the model (a name or a spec) at its
    resolution (or SIZE), batch BATCH: the shapes the fused training passes see."""
    _, blocks, shapes = _model_shapes(model_name)
    return [(block, *shapes[block.conv_dw]) for block in blocks]


def _norm_act_launches(model: nn.Module, shapes: dict, name: str, launches: list) -> None:
    """The stem's and head's batch norm and SiLU in a fused training step (`bn_act`), forward and backward."""
    for part, bn in (("stem", model.bn1), ("head", model.bn2)):
        y = _meta(*shapes[bn][0], channels_last=True).requires_grad_()
        with _catching(launches, f"{name} {part}"):
            out = bn_act.batch_norm_act(nn.BatchNorm2d(bn.num_features, device="meta"), nn.SiLU(), y)
            out.backward(torch.empty_like(out))


def saver_launches(model_name) -> list[Launch]:
    """Every kernel launch of the "activations" memory saver's training step (`effnet.fast.memory`): each block's
    batch norms and SiLUs through `bn_act`'s passes, forward and backward (batch BATCH, DTYPE activations)."""
    launches = []
    _, blocks, shapes = _model_shapes(model_name)
    name = getattr(model_name, "name", model_name)
    for index, block in enumerate(blocks):
        dw_in, dw_out = shapes[block.conv_dw]
        for part, shape in (("bn1", dw_in),) * block.expands + (("bn2", dw_out),):
            y = _meta(*shape, channels_last=True).requires_grad_()
            with _catching(launches, f"{name} block {index} {part} (activations saver)"):
                out = bn_act.silu_batch_norm(nn.BatchNorm2d(shape[1], device="meta"), y)
                out.backward(torch.empty_like(out))
    return launches


def _batch_norm(channels: int, where: str, launches: list) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch norm's (scale, shift) from meta statistics, forward and backward (`bn_stats.batch_norm_train`)."""
    bn = nn.BatchNorm2d(channels, device="meta")
    mean, var = (_meta(channels, dtype=torch.float32).requires_grad_() for _ in range(2))
    with _catching(launches, where):
        scale, shift = bns.batch_norm_train(bn, mean, var, BATCH * 49)
        torch.autograd.backward([scale, shift], [torch.empty_like(scale), torch.empty_like(shift)])
    return scale.detach(), shift.detach()


def _pointwise_launches(x, weight, scale, shift, se, where: str, launches: list) -> torch.Tensor:
    """A 1x1 layer's fused passes, forward and backward (an SE projection through `se_projection`)."""
    act = scale is not None
    with _catching(launches, where):
        if se is not None:
            y, mean, _, pooled, gate = sep._forward(x, weight, scale, shift, *se)
            stats = bns.gradient_stats(mean, mean, mean, y)
            sep._backward(torch.empty_like(y), stats, x, y, weight, scale, shift, pooled, gate, se[0], se[1], se[2],
                          True)
        else:
            y, mean, _ = bnp._forward(x, weight, scale, shift, None, act)
            stats = bns.gradient_stats(mean, mean, mean, y)
            bnp._backward(torch.empty_like(y), stats, x, y, weight, scale, shift, None, act, True, True)
    return y


def _training_launches(model_name: str) -> list[Launch]:
    """Every kernel launch a training step of the model makes through the fused passes (batch BATCH, DTYPE
    activations: bf16 as autocast makes them)."""
    launches = []
    model, blocks, shapes = _model_shapes(model_name)
    name = getattr(model_name, "name", model_name)
    for index, block in enumerate(blocks):
        dw_in, dw_out = shapes[block.conv_dw]
        where = f"{name} block {index}"
        scale = shift = None
        if block.expands:
            x = _meta(BATCH, block.conv_pw.in_channels, *dw_in[2:], channels_last=True)
            weight = _meta(dw_in[1], block.conv_pw.in_channels)
            _pointwise_launches(x, weight, None, None, None, f"{where} expansion", launches)
            scale, shift = _batch_norm(dw_in[1], where, launches)
        k, stride = block.conv_dw.kernel_size[0], block.conv_dw.stride[0]
        y1 = _meta(*dw_in, channels_last=True)
        output_size, padding = ops.conv_geometry(y1, k, stride, same=False)
        taps = _meta(k * k, dw_in[1])
        with _catching(launches, f"{where}, k{k} s{stride}"):
            y2, mean, _, a = bnd._forward(y1, taps, scale, shift, k, stride, padding, output_size, True)
            stats = bns.gradient_stats(mean, mean, mean, y2)
            bnd._backward(torch.empty_like(y2), stats, y1, a, y2, taps, scale, shift, k, stride, padding, True, True,
                          True)
            # the Triton passes on their tiles where the tuning file or `default_cudnn` took another form
            tiles = {op: bnd._tiles(op, y1, k, stride) for op in ("bn_depthwise", "bn_depthwise_input_grad",
                                                                  "bn_depthwise_weight_grad")}
            bnd._forward(y1, taps, scale, shift, k, stride, padding, output_size, True, tiles["bn_depthwise"])
            bnd._backward(torch.empty_like(y2), stats, y1, a, y2, taps, scale, shift, k, stride, padding, True, True,
                          True, tiles["bn_depthwise_input_grad"], tiles["bn_depthwise_weight_grad"])
            # the element-wise passes of the gradients' cuDNN form (`bn_depthwise_cudnn`, a tuning file's choice)
            bdc.output_gradient(torch.empty_like(y2), stats, y2)
            bdc.forward(a if scale is not None else y1, taps, k, stride, padding)
            if scale is not None:
                affine_grad(torch.empty_like(y1), y1, scale, shift, act=True)
        scale, shift = _batch_norm(dw_out[1], where, launches)
        se = None
        if block.has_se:
            reduced = block.se.conv_reduce.out_channels
            se = (_meta(reduced, dw_out[1]), _meta(reduced, dtype=torch.float32), _meta(dw_out[1], reduced),
                  _meta(dw_out[1], dtype=torch.float32))
        weight = _meta(block.conv_pwl.out_channels, dw_out[1])
        y3 = _pointwise_launches(y2, weight, scale, shift, se, f"{where} projection", launches)
        scale, shift = _batch_norm(block.conv_pwl.out_channels, where, launches)
        _output_launches(y3, scale, shift, block.has_skip, f"{where} output", launches)
    _norm_act_launches(model, shapes, name, launches)
    return launches


def _output_launches(y, scale, shift, residual: bool, where: str, launches: list) -> None:
    """A block's output pass (`block_output`: bn3, stochastic depth and the residual), forward and backward."""
    y = y.detach().requires_grad_()
    keep = _meta(BATCH) if residual else None
    shortcut = torch.empty_like(y).requires_grad_() if residual else None
    with _catching(launches, where):
        out = bo.block_output(y, scale, shift, keep, shortcut)
        out.backward(torch.empty_like(out))


def _inference_launches(model_name: str) -> list[Launch]:
    """Every kernel launch of the inference path's (effnet-fast) bf16 forward of the model (batch BATCH): the
    fused stem, each block's expansion, depthwise + SiLU + SE sums and projection (the gate on its weight tile,
    the residual)."""
    import effnet
    from effnet.fast.fused import optimize_for_inference

    from effnet.fast.fused import FusedMBConv

    plain = effnet.create_model(model_name).eval()
    model = optimize_for_inference(plain, dtype=torch.bfloat16, use_triton=True).to("meta")
    launches, where = [], [f"{model_name} inference stem"]
    for index, block in enumerate(module for module in model.modules() if isinstance(module, FusedMBConv)):
        block.register_forward_pre_hook(lambda *_, index=index: where.__setitem__(0, f"{model_name} inference "
                                                                                     f"block {index}"))
    size = plain.spec.resolution
    with _catching(launches, lambda: where[0]), torch.inference_mode():
        model(_meta(BATCH, 3, size, size, dtype=torch.float32))
    return launches


def _distinct(launches: list[Launch]) -> list[Launch]:
    """Each compilation once, named by the first launch that needs it."""
    seen, distinct = set(), []
    for launch in launches:
        key = (launch.kernel.fn.__module__, launch.kernel.fn.__name__, tuple(sorted(launch.signature.items())),
               tuple(sorted(launch.constexprs.items())), tuple(sorted((k, str(v)) for k, v in launch.attrs.items())),
               tuple(sorted((k, str(v)) for k, v in launch.options.items())))
        if key not in seen:
            seen.add(key)
            distinct.append(launch)
    return distinct


def _launches(models: tuple[str, ...] = MODELS) -> list[Launch]:
    return _distinct([launch for model_name in models for launch in _training_launches(model_name)]
                     + [launch for model_name in models for launch in _inference_launches(model_name)])


def compile_kernel(launch: Launch, arch: int):
    """The compiled kernel for CUDA compute capability `arch` (e.g. 90)."""
    source = ASTSource(fn=launch.kernel, signature=launch.signature, constexprs=launch.constexprs, attrs=launch.attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=launch.options)


def load_widths(compiled) -> str:
    """How many global load instructions of each width (bytes per thread) the kernel's PTX holds."""
    widths = collections.Counter()
    for vector, bits in re.findall(r"ld\.global(?:\.\w+)*?(?:\.v(\d))?\.[bfsu](\d+)\b", compiled.asm["ptx"]):
        widths[int(vector or 1) * int(bits) // 8] += 1
    return " ".join(f"{count}x{width}B" for width, count in sorted(widths.items(), reverse=True))


def prefetch(compiled) -> str:
    """Whether a kernel's asynchronous copies (the tiles Triton's pipeliner stages through shared memory) stay
    in flight while it computes: `cp.async.wait_group N` with N > 0 waits for all but the newest N groups.
    With two stages Triton waits for every group (N = 0) at the top of each loop step and issues the next
    step's copies after the step's products, so no load overlaps the program's own work."""
    waits = [int(n) for n in re.findall(r"cp\.async\.wait_group\s+(\d+)", compiled.asm["ptx"])]
    if not waits:
        return ""
    return ", copies overlap" if max(waits) > 0 else ", copies wait"


def tensor_cores(compiled) -> str:
    """Which tensor-core instructions the kernel's products take: ", wgmma" (Hopper's asynchronous warpgroup
    products, operands from shared memory) or ", mma.sync" (Ampere's, each warp's operands through registers:
    Triton's choice where a product's M side is under 64, e.g. 32-row tiles)."""
    ptx = compiled.asm["ptx"]
    return ", wgmma" if "wgmma.mma_async" in ptx else (", mma.sync" if re.search(r"\bmma\.sync", ptx) else "")


def silu(compiled) -> str:
    """", tanh SiLU" where the kernel's SiLU runs on PTX's tanh.approx (`kernels.fast_silu`)."""
    return ", tanh SiLU" if "tanh.approx.f32" in compiled.asm["ptx"] else ""


def resource_usage(compiled, sass: bool = True) -> dict[str, int]:
    """Registers, stack (spill) bytes and shared memory of a compiled kernel, from cuobjdump's view of its cubin,
    and with `sass` its SASS instructions (the static count, NOPs left out: per program for an unrolled kernel, per
    loop step and more for a looping one; disassembling takes most of this script's time, ~0.4 s a kernel)."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        text = subprocess.run([str(cuobjdump), "-res-usage", cubin.name], capture_output=True, text=True).stdout
        listing = subprocess.run([str(cuobjdump), "-sass", cubin.name], capture_output=True,
                                 text=True).stdout if sass else ""
    usage = {key.lower(): int(value) for key, value in re.findall(r"(REG|STACK|LOCAL):(\d+)", text)}
    usage["shared"] = compiled.metadata.shared  # Triton's shared memory is dynamic: its own count
    if sass:
        ops = re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", listing, re.MULTILINE)
        usage["instructions"] = sum(1 for op in ops if not op.startswith("NOP"))
    return usage


def resident(registers: int, shared: int, num_warps: int) -> int:
    """How many programs of a kernel fit on one sm_90 multiprocessor at once (registers are given out per warp in
    units of 256)."""
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    return min(SM_REGISTERS // per_warp // num_warps, SM_SHARED // (shared + 1024), SM_WARPS // num_warps,
               SM_PROGRAMS)


def fill(launch: Launch, compiled, usage: dict[str, int]) -> str:
    """Resident warps per multiprocessor (of 64) and the launch's waves: programs over what SMS multiprocessors
    hold at once. Under one wave leaves multiprocessors idle; few warps leave little to hide memory latency."""
    num_warps = compiled.metadata.num_warps
    per_sm = resident(usage.get("reg", 0), usage.get("shared", 0), num_warps)
    return f"{per_sm * num_warps:2}/64 warps, {launch.programs / (per_sm * SMS):5.2f} waves"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, major*10+minor (90: H100)")
    parser.add_argument("--only", help="compile only the kernels whose name contains this")
    parser.add_argument("--sweeps", action="store_true",
                        help="compile the tile sets and kernels the sweeps try beyond the defaults (bn_pointwise's "
                             "tiles, the streaming 1x1 kernel, the warmed and the banded depthwise kernels) instead")
    parser.add_argument("--no-sass", action="store_true",
                        help="leave out the SASS instruction counts (disassembling is most of the time taken)")
    args = parser.parse_args()
    failed = 0
    if args.sweeps:
        from compile_sweeps import sweep_launches  # (it imports this module)
    for launch in (sweep_launches() if args.sweeps else _launches()):
        if args.only and args.only not in launch.name:
            continue
        start = time.time()
        try:
            compiled = compile_kernel(launch, args.arch)
            usage = resource_usage(compiled, sass=not args.no_sass)
        except Exception as error:  # noqa: BLE001 - each kernel's failure is one line, the rest still compile
            failed += 1
            print(f"FAIL {launch.name}: {type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1]}",
                  flush=True)
            continue
        spilled = usage.get("stack", 0) + usage.get("local", 0)
        print(f"ok   {launch.name:55} {usage.get('reg', 0):4} registers, {spilled:5} bytes spilled, "
              f"{usage.get('shared', 0):6} bytes shared, {fill(launch, compiled, usage)}{prefetch(compiled)}, "
              f"loads {load_widths(compiled)}{tensor_cores(compiled)}{silu(compiled)}"
              + (f", {usage['instructions']} instructions" if "instructions" in usage else "")
              + f"  ({time.time() - start:.1f} s)"
              + ("  (spills: slow)" if spilled else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
