"""One GPU call: prove the fast paths equal the reference on the GPU, then time effnet against timm
and torchvision (B0 and B4, inference and training, eager / compiled / CUDA graphs).

    PYTHONPATH=src python benchmarks/gpu_check.py --out results/ --budget-s 450

Checks first (a minute or two, mostly compiling): Triton kernels against PyTorch in float32 (TF32 off)
and bf16, the fused B0/B4 against the plain model (with the PyTorch stem too), CUDA-graph replay against
eager, the training paths' gradients (the Triton depthwise; every conv with its batch norms fused;
float32, bf16, compiled), the memory savers' gradients. With `--tuning FILE` the fused paths take the sweeps'
per-layer choices, checks included.
A check group that raises (a compile error, say) is one failed check naming the error; the rows still run.
Without B0 in `--only` (a second call for B4) only the fused-model checks run. Then the timing rows in
priority order; a row that would not end inside `--budget-s` (counted at what it took on an H100,
`ROW_SECONDS`) is skipped and listed, so a short lease still returns the most important numbers. Each
row is printed as it finishes and the whole result is written to OUT/gpu_check.json; the table and
goal verdicts last.
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import effnet  # noqa: E402
from effnet.bench.candidates import build_candidates  # noqa: E402
from effnet.bench.measure import BenchRow, Timer, measure, relative_error  # noqa: E402
from effnet.bench.throughput import BenchResult, environment, format_row, format_table  # noqa: E402
from effnet.fast import ops, optimize_for_inference, tuning  # noqa: E402
from effnet.fast.graphs import CudaGraphModule  # noqa: E402
from effnet.fast.memory import enable_memory_saving  # noqa: E402
from gpu_goals import goals, off_reference  # noqa: E402

BF16_BOUND = 2e-2  # relative L2 error of the fused bf16 model's logits against float32 (documented bound)
# What a row takes on an H100, compiling included (runs 1 and 4: B0 inference 25-31 s, B0 training 68 s, B4
# inference 90-99 s; B4 training guessed), with a margin: a row that would not end inside the budget is skipped.
ROW_SECONDS = {("efficientnet_b0", "inference", "compile"): 45, ("efficientnet_b0", "training", "compile"): 95,
               ("efficientnet_b4", "inference", "compile"): 130, ("efficientnet_b4", "training", "compile"): 240,
               # compiled again, most of it from the caches the compile row left (Inductor's, Triton's)
               ("efficientnet_b0", "inference", "compile-cudagraphs"): 40,
               ("efficientnet_b4", "inference", "compile-cudagraphs"): 90,
               ("efficientnet_b0", "training", "compile-cudagraphs"): 80,
               ("efficientnet_b4", "training", "compile-cudagraphs"): 200}
EAGER_ROW_SECONDS = 15  # eager and CUDA-graph rows take 1-10 s (new Triton kernels compile in the first)
ROW_BOUND = 5e-2  # a timing row's sanity check: autocast models round more than the fused path
# build_candidates' options: every row the plan names (the tests build the same set)
CANDIDATE_OPTIONS = dict(memory_savers=("activations", "stages"), unfused_stem=True, triton_depthwise=True,
                         fused_training=True)

# (model, image size, inference batch, training batch, [(task, mode, candidate), ...]) by priority: first the rows
# each goal is judged on (effnet's best against timm compiled, B0 then B4), then what explains them. A model may
# come back later in the plan with rows that matter less.
B0, B4 = ("efficientnet_b0", 224, 256, 256), ("efficientnet_b4", 380, 128, 64)
PLAN = [
    (*B0, [
        ("inference", "compile", "timm"), ("inference", "cudagraphs", "effnet-fast"),
        ("inference", "compile-cudagraphs", "timm"),  # timm compiled without the host's launch cost
        # every conv with its batch norms fused (effnet.fast.fused_training; never timed yet)
        ("training", "compile", "timm"), ("training", "compile", "effnet-ftrain"),
        ("training", "eager", "effnet-ftrain"),
        # the whole step captured: no launch cost (run 6: eager effnet-ftrain 180 ms of wall, 44 of kernels)
        ("training", "cudagraphs", "effnet-ftrain"), ("training", "cudagraphs", "timm"),
        ("training", "cudagraphs", "effnet"),  # the plain step's kernels at their pace, beside effnet-ftrain's
        # compiled and captured (session 16, after the rows above in case a capture fails): Inductor around the fused
        # operators with no launch cost; timm's the same
        ("training", "compile-cudagraphs", "effnet-ftrain"), ("training", "compile-cudagraphs", "timm"),
        ("training", "eager", "timm"), ("training", "eager", "effnet-stages"),
        ("training", "compile", "effnet"),  # the same graph as timm's (run 1: 0.98x)
    ]),
    (*B4, [
        ("inference", "compile", "timm"), ("inference", "cudagraphs", "effnet-fast"),
        ("inference", "compile-cudagraphs", "timm"),
        ("training", "eager", "timm"), ("training", "eager", "effnet-ftrain"), ("training", "eager", "effnet-stages"),
        ("training", "cudagraphs", "effnet-ftrain"),  # B4's training never timed yet (gpu_lease.sh b4train)
        ("training", "compile", "timm"), ("training", "compile", "effnet-ftrain"), ("training", "cudagraphs", "timm"),
        ("training", "compile-cudagraphs", "effnet-ftrain"), ("training", "compile-cudagraphs", "timm"),
    ]),
    (*B0, [
        ("inference", "compile", "effnet-fast"),  # Inductor around the fused operators (effnet.fast.custom_ops)
        ("inference", "cudagraphs", "effnet-fast-unfused-stem"),
        ("inference", "eager", "timm"), ("inference", "eager", "effnet-fast"),
        ("latency", "cudagraphs", "effnet-fast"), ("latency", "cudagraphs", "timm"),
        ("training", "eager", "effnet-tdw"), ("training", "eager", "effnet"),
        ("inference", "eager", "torchvision"), ("inference", "eager", "effnet"), ("latency", "eager", "timm"),
        ("training", "eager", "torchvision"), ("training", "eager", "effnet-activations"),
        ("training", "compile", "effnet-tdw"),
    ]),
    (*B4, [
        ("inference", "cudagraphs", "effnet-fast-unfused-stem"), ("inference", "eager", "timm"),
        ("inference", "eager", "effnet-fast"), ("training", "eager", "effnet"), ("training", "eager", "effnet-tdw"),
        ("training", "eager", "effnet-activations"), ("training", "compile", "effnet"),
    ]),
]


def randomised(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = effnet.create_model(name).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.cuda()


def profile(model_name: str, size: int, batch: int) -> None:
    """The CUDA kernels that take longest in one fused bf16 forward, for the notes."""
    fast = optimize_for_inference(randomised(model_name), dtype=torch.bfloat16)
    x = torch.randn(batch, 3, size, size, device="cuda")

    def forward() -> None:
        with torch.inference_mode():
            fast(x)

    print_profile(f"{model_name} fused bf16 forward, batch {batch}", forward, rows=10)


# (resolution, batch) of the profiled eager training steps: B0's at batch 128, B4's at the training rows' 64
TRAINING_PROFILES = {"efficientnet_b0": (224, 128), "efficientnet_b4": (380, 64)}


def profile_training(model_name: str, size: int, batch: int) -> None:
    """The kernels of one eager bf16 training step of the plain model, `effnet-ftrain` and `effnet-tdw`: where
    training time goes (the batch norms' passes; cuDNN's depthwise gradients against the Triton ones)."""
    from effnet.fast.depthwise_train import use_triton_depthwise
    from effnet.fast.fused_training import use_fused_training

    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    for name, convert in (("effnet", lambda m: m), ("effnet-ftrain", use_fused_training),
                          ("effnet-tdw", use_triton_depthwise)):
        model = convert(effnet.create_model(model_name)).cuda().to(memory_format=torch.channels_last).train()

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            model.zero_grad(set_to_none=True)

        # 30 rows: run 9's 14 left 2.9 of the fused step's 18.4 ms of kernels unnamed
        print_profile(f"{model_name} {name} eager bf16 training step, batch {batch}", step, rows=30)
    torch.cuda.empty_cache()


def print_profile(title: str, step, rows: int) -> None:
    """The top kernels of 3 calls, after the calls' wall time against their kernels' time: a path whose
    kernels keep the GPU busy for much less than the wall time waits on the CPU (launch-bound, e.g. the
    many small operators of an eager step), which compiling or a CUDA graph would hide."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / 3
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    busy = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in events) / 3e6
    launches = sum(e.count for e in events if getattr(e, "self_device_time_total", 0) > 0) / 3
    print(f"\n{title} (CUDA time of 3 calls): {wall * 1e3:.2f} ms per call, its kernels {busy * 1e3:.2f} ms "
          f"({busy / wall:.0%} of it), {launches:.0f} kernels a call", flush=True)
    print(events.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60), flush=True)


# The check groups (`--checks` picks among them by key): (key, name in the report).
CHECK_GROUPS = (("kernels", "kernels"), ("models", "fused models"), ("tdw", "training depthwise"),
                ("ftrain", "fused training"), ("savers", "memory savers"))


def checks(models: tuple[tuple[str, int], ...], keys: tuple[str, ...] | None = None) -> list[tuple[str, float, float]]:
    """(what, error, bound) for every fast path on this GPU: the fused `models` (name, size), and with B0
    among them the kernels, the two training paths and the memory savers (all checked on B0's layers);
    `keys` (of CHECK_GROUPS) runs only those groups. A group of checks that raises is one failed row naming
    the error, and the others still run: a broken check must not cost a lease its timing rows."""
    from effnet.fast.depthwise_train import use_triton_depthwise
    from effnet.fast.fused_training import use_fused_training

    functions = {"kernels": kernel_checks, "models": lambda: model_checks(models),
                 "tdw": lambda: training_checks("training depthwise", use_triton_depthwise),
                 "ftrain": lambda: training_checks("fused training", use_fused_training),
                 "savers": memory_saver_checks}
    groups = [(name, functions[key]) for key, name in CHECK_GROUPS if keys is None or key in keys]
    if "efficientnet_b0" not in dict(models):  # a second call for B4 alone: the rest was checked with B0 in the first
        groups = [(name, group) for name, group in groups if name == "fused models"]
    results = []
    for name, group in groups:
        try:
            results += group()
        except Exception as error:  # noqa: BLE001 - reported as a failed check, the run goes on
            message = (str(error).strip().splitlines() or [""])[0]
            results.append((f"{name}: {type(error).__name__}: {message}"[:160], float("inf"), 0.0))
        finally:
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cuda.matmul.allow_tf32 = True
    return results


def kernel_checks() -> list[tuple[str, float, float]]:
    """The Triton depthwise and 1x1 kernels against PyTorch in float64, on float32 (TF32 off) and bf16 inputs."""
    results = []
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for dtype, bound in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        x = torch.randn(8, 96, 29, 31, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        for k, stride, same in ((3, 1, False), (5, 2, True)):
            w = torch.randn(96, 1, k, k, device="cuda", dtype=dtype)
            taps, b = w.flatten(1).t().contiguous(), torch.randn(96, device="cuda", dtype=dtype)
            ref = ops.depthwise(x.double(), w.double(), taps.double(), b.double(), stride=stride, same=same,
                                pool=True, use_triton=False)
            out = ops.depthwise(x, w, taps, b, stride=stride, same=same, pool=True, use_triton=True)
            results.append((f"depthwise k{k}s{stride} {dtype}", relative_error(out[0], ref[0]), bound))
            results.append((f"depthwise SE sums k{k}s{stride} {dtype}", relative_error(out[1], ref[1]), bound))
        w = torch.randn(48, 96, 1, 1, device="cuda", dtype=dtype) / 10
        wt, b = w.flatten(1).t().contiguous(), torch.randn(48, device="cuda", dtype=dtype)
        gate = torch.rand(8, 96, device="cuda")
        res = torch.randn(8, 48, 29, 31, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        ref = ops.pointwise((x.float() * gate[:, :, None, None]).to(dtype).double(), w.double(), wt.double(),
                            b.double(), act=False, residual=res.double(), use_triton=False)
        out = ops.pointwise(x, w, wt, b, act=False, gate=gate, residual=res, use_triton=True)
        results.append((f"pointwise gate+residual {dtype}", relative_error(out, ref), bound))
    return results


def model_checks(models: tuple[tuple[str, int], ...]) -> list[tuple[str, float, float]]:
    """The fused models (stem fused, CUDA graph, PyTorch stem) against the float32 model (TF32 off)."""
    results = []
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for name, size in models:
        model = randomised(name)
        x = torch.randn(4, 3, size, size, device="cuda")
        with torch.inference_mode():
            expected = model(x)
            results.append((f"{name} fused fp32", relative_error(optimize_for_inference(model)(x), expected), 1e-5))
            fast = optimize_for_inference(model, dtype=torch.bfloat16)
            results.append((f"{name} fused bf16", relative_error(fast(x), expected), BF16_BOUND))
            graphed = CudaGraphModule(fast, x)
            # Not bit-identical: the SE sums are float32 atomic adds, whose order varies run to run.
            results.append((f"{name} fused bf16 CUDA graph", relative_error(graphed(x), expected), BF16_BOUND))
            plain_stem = optimize_for_inference(model, dtype=torch.bfloat16, fuse_stem=False)
            results.append((f"{name} fused bf16, PyTorch stem", relative_error(plain_stem(x), expected), BF16_BOUND))
    return results


def memory_saver_checks() -> list[tuple[str, float, float]]:
    """The memory savers' float32 gradients (TF32 off) against the plain model's."""
    results = []
    for saver in ("activations", "stages"):
        torch.backends.cudnn.allow_tf32 = False
        reference = effnet.create_model("efficientnet_b0", drop_rate=0.0, drop_path_rate=0.0).cuda().train()
        saving = enable_memory_saving(effnet.create_model("efficientnet_b0", drop_rate=0.0,
                                                          drop_path_rate=0.0).cuda().train(), saver)
        saving.load_state_dict(reference.state_dict())
        x, y = torch.randn(16, 3, 128, 128, device="cuda"), torch.randint(0, 1000, (16,), device="cuda")
        grads = []
        for model in (reference, saving):
            F.cross_entropy(model(x), y).backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        results.append((f"memory saver {saver} gradients fp32", relative_error(grads[1], grads[0]), 1e-4))
    return results


def small_b0():
    """The compiled gradient check's model: B0 a quarter as deep and as wide (every block kind)."""
    from effnet.models import get_entry
    from effnet.scaling import scale_by_multipliers

    return scale_by_multipliers(get_entry("efficientnet_b0").spec, depth=0.25, width=0.25, name="b0_small")


def training_checks(what: str, convert) -> list[tuple[str, float, float]]:
    """A training path (`convert` makes it from the plain model: `effnet-tdw`'s Triton depthwise,
    `effnet-ftrain`'s convs with their batch norms fused): B0's loss gradients against the plain model in
    float32 (TF32 off) and under bf16 autocast, eager and through torch.compile (its custom operators in the
    graph)."""
    results = []
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    reference = effnet.create_model("efficientnet_b0", drop_rate=0.0, drop_path_rate=0.0).cuda().train()
    reference = reference.to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 128, 128, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (16,), device="cuda")

    def gradients(model, dtype=None):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            F.cross_entropy(model(x), y).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    expected = gradients(reference)
    triton_model = convert(copy.deepcopy(reference))
    results.append((f"{what} gradients fp32", relative_error(gradients(triton_model), expected), 1e-4))
    # bf16 gradients stray from float32 ones by a few percent whoever computes them: the bound is twice
    # what the plain model's bf16 gradients stray (printed as a row of its own, held to nothing).
    yardstick = relative_error(gradients(reference, torch.bfloat16), expected)
    results.append(("plain model gradients bf16 (the yardstick)", yardstick, float("inf")))
    results.append((f"{what} gradients bf16", relative_error(gradients(triton_model, torch.bfloat16), expected),
                    max(2 * yardstick, 1e-2)))
    # Stochastic depth on (rate 0.5; the checks above run without): from one seed both models drop the same images.
    dropping = effnet.create_model("efficientnet_b0", drop_rate=0.0, drop_path_rate=0.5).cuda().train()
    dropping.load_state_dict(reference.state_dict())
    dropping = dropping.to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    expected_dropping = gradients(dropping)
    torch.manual_seed(1)
    results.append((f"{what} gradients fp32, stochastic depth 0.5",
                    relative_error(gradients(convert(copy.deepcopy(dropping))), expected_dropping), 1e-4))
    # Compiled: a narrow, shallow B0 (every block kind) compiles in seconds; the timing rows compile the real one.
    torch.manual_seed(0)
    reference = effnet.create_model(small_b0(), drop_rate=0.0, drop_path_rate=0.0).cuda().train()
    reference = reference.to(memory_format=torch.channels_last)
    expected = gradients(reference)
    compiled = torch.compile(convert(copy.deepcopy(reference)))
    results.append((f"{what} gradients fp32, compiled (small B0)",
                    relative_error(gradients(compiled), expected), 1e-4))
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="seconds from the start by which the last timing row should end")
    parser.add_argument("--only", nargs="*", help="model names from the plan to run (default: all)")
    parser.add_argument("--tasks", nargs="*", help="tasks to time (default: all in the plan)")
    parser.add_argument("--modes", nargs="*", help="modes to time (eager, compile, cudagraphs, ...; default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="print the top kernels of the fused forward of each model timed (B0 and B4)")
    parser.add_argument("--profile-training", action="store_true",
                        help="print the top kernels of an eager training step (B0's at batch 128; with --only, of "
                             "each model named, B4's at 64): plain, effnet-ftrain, effnet-tdw")
    parser.add_argument("--checks", nargs="+", choices=[key for key, _ in CHECK_GROUPS],
                        help="the check groups to run (default: all)")
    parser.add_argument("--no-checks", action="store_true",
                        help="time only: for a second call on the same machine, after the checks passed in the first")
    parser.add_argument("--tuning", type=Path, help="per-layer kernel choices from the sweeps (effnet.fast.tuning)")
    parser.add_argument("--sweep", action="store_true",
                        help="then run depthwise_sweep.py (B0's depthwise layers against PyTorch and a tile sweep)")
    return parser.parse_args()


def time_rows(args: argparse.Namespace, start: float, document: dict) -> None:
    """The plan's rows for the models in `--only`, each written to OUT/gpu_check.json as it ends; a row that
    would end after the budget is listed under `skipped` instead."""
    timer = Timer(torch.device("cuda"), warmup=3, repeats=10, iterations=5)
    results: dict[str, BenchResult] = {}
    for model_name, size, batch, train_batch, rows in PLAN:
        if args.only and model_name not in args.only:
            continue
        candidates = build_candidates(model_name, ("effnet", "timm", "torchvision"), **CANDIDATE_OPTIONS)
        by_name = {c.name: c for c in candidates.items}
        result = results.setdefault(model_name, BenchResult(
            config={"model": model_name, "image_size": size, "batch_size": batch, "training_batch_size": train_batch,
                    "precision": "bf16", "memory_format": "channels_last"}, environment=document["environment"]))
        for task, mode, name in rows:
            if (args.tasks and task not in args.tasks) or (args.modes and mode not in args.modes):
                continue
            if time.time() - start + ROW_SECONDS.get((model_name, task, mode), EAGER_ROW_SECONDS) > args.budget_s:
                document["skipped"].append(f"{model_name} {task} {mode} {name}")
                continue
            row = measure(by_name[name], task, mode, device=torch.device("cuda"), dtype=torch.bfloat16,
                          memory_format=torch.channels_last,
                          batch_size={"latency": 1, "training": train_batch}.get(task, batch), image_size=size,
                          timer=timer, reference=candidates.reference, tolerance=ROW_BOUND)
            result.rows.append(row)
            print(f"[{time.time() - start:5.0f} s] {model_name} {format_row(row)}", flush=True)
            document["models"][model_name] = result.to_json()
            (args.out / "gpu_check.json").write_text(json.dumps(document, indent=2))


def report(document: dict) -> None:
    """Each model's table, then each goal's verdict (also stored in the document)."""
    for model_name, result in document["models"].items():
        table = BenchResult(result["config"], document["environment"])
        table.rows = [BenchRow(**row) for row in result["rows"]]
        print(f"\n{model_name} ({result['config']['image_size']} px, bf16, channels_last; inference batch "
              f"{result['config']['batch_size']}, training batch {result['config']['training_batch_size']})")
        print(format_table(table))
    document["goals"] = goals(document["models"])
    print("\nissue 6's goals, this run:")
    for goal in document["goals"]:
        print(f"  {goal['goal']:55} {goal['measured']:>32}  {goal['verdict']}")
    document["off_reference"] = off_reference(document)
    if document["off_reference"]:
        print("\npeer rows off the issue's reference figures (the verdicts that divide by them are suspect):")
        for line in document["off_reference"]:
            print(f"  {line}")
    if document["skipped"]:
        print("\nskipped (budget):", "; ".join(document["skipped"]))


def main() -> int:
    args = parse_args()
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tuning:
        tuning.use(args.tuning)
    env = environment(torch.device("cuda"))  # records the tuning file too
    try:
        env["nvidia-smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,power.limit",
                                            "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    print("environment:", json.dumps(env), flush=True)
    check_models = (("efficientnet_b0", 224), ("tf_efficientnet_b4", 380))
    check_rows = [] if args.no_checks else checks(
        tuple(m for m in check_models if not args.only or m[0].removeprefix("tf_") in args.only),
        tuple(args.checks) if args.checks else None)
    failed = [c for c in check_rows if not c[1] <= c[2]]
    for what, error, bound in check_rows:
        print(f"check {what:45} error {error:.2e} bound {bound:.0e} {'ok' if error <= bound else 'FAIL'}", flush=True)
    print(f"checks done in {time.time() - start:.0f} s: {len(check_rows) - len(failed)}/{len(check_rows)} ok",
          flush=True)
    document = {"environment": env, "checks": [dict(zip(("what", "error", "bound"), c)) for c in check_rows],
                "models": {}, "skipped": []}
    time_rows(args, start, document)
    # the fused forward of each model in the plan (those in --only), the training step of B0
    profiled = [(name, size, batch) for name, size, batch, _, _ in PLAN if not args.only or name in args.only]
    trained = [(name, *shape) for name, shape in TRAINING_PROFILES.items()
               if name in (args.only or ["efficientnet_b0"])]
    for wanted, what, show, shapes in ((args.profile, "fused forward", profile, dict.fromkeys(profiled)),
                                       (args.profile_training, "training step", profile_training, trained)):
        for model_name, size, batch in shapes if wanted else ():
            try:
                show(model_name, size, batch)
            except Exception as error:  # noqa: BLE001 - the table and the goals still follow
                print(f"\nprofile of the {what} failed: {type(error).__name__}: {error}", flush=True)
    if args.sweep:
        subprocess.run([sys.executable, str(Path(__file__).with_name("depthwise_sweep.py")), "--out", str(args.out)])
    report(document)
    (args.out / "gpu_check.json").write_text(json.dumps(document, indent=2))
    print(f"\nchecks: {len(check_rows) - len(failed)}/{len(check_rows)} ok; total {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
