"""`effnet bench`: throughput, latency and peak memory against timm and torchvision, in one process."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from effnet.bench import MODES, PRECISIONS, TASKS
from effnet.cli.output import check_writable, print_json, write_text
from effnet.errors import EffnetError
from effnet.fast import MEMORY_SAVERS


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench", help="time inference and training against timm and torchvision",
        description="Inference and training throughput, batch-1 latency and peak memory of an effnet model, "
                    "its fast paths, and timm's and torchvision's equivalent models (when installed), measured "
                    "in one process on the same inputs. Medians of repeats; device events on GPU.")
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (auto: cuda when available)")
    parser.add_argument("--batch-size", type=int, help="default: 256 on GPU, 32 on CPU")
    parser.add_argument("--image-size", type=int, help="default: the model's resolution")
    parser.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS),
                        help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--memory-format", default="auto", choices=("auto", "channels_last", "contiguous"),
                        help="auto: channels_last on GPU")
    parser.add_argument("--task", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--mode", nargs="+", default=["eager"], choices=MODES,
                        help="eager, compile (torch.compile), cudagraphs (GPU: a captured forward, or a whole "
                             "training step in bf16 or fp32), compile-cudagraphs (GPU: the compiled "
                             "forward, or training step, captured, as torch.compile's reduce-overhead mode) "
                             "and/or compile-freezing (inference: compiled with Inductor's freezing, the weights "
                             "as constants, as PyTorch advises for CPU inference)")
    parser.add_argument("--libraries", nargs="+", default=["effnet", "timm", "torchvision"],
                        choices=("effnet", "timm", "torchvision"))
    parser.add_argument("--no-fast", dest="fast", action="store_false",
                        help="leave out effnet's fused inference and memory-saving rows")
    parser.add_argument("--memory-saver", nargs="+", default=["activations"], choices=MEMORY_SAVERS,
                        help="one memory-saving training row per saver (activations: recompute BN + SiLU; "
                             "stages: checkpoint each stage; both)")
    parser.add_argument("--fuse-expansion", action="store_true",
                        help="add effnet-fast-expand: the fused model with each expansion recomputed inside the "
                             "depthwise pass (experimental; measured 3-6x slower on an H100)")
    parser.add_argument("--unfused-stem", action="store_true",
                        help="add effnet-fast-unfused-stem: the fused model with the input cast, stem conv and "
                             "SiLU as PyTorch passes instead of its one stem kernel")
    parser.add_argument("--triton-depthwise", action="store_true",
                        help="add effnet-tdw: training with the depthwise convs' forward and backward as Triton "
                             "kernels (experimental)")
    parser.add_argument("--fused-training", action="store_true",
                        help="add effnet-ftrain: training with each MBConv's 1x1 convs applying the batch norm "
                             "of their input as they load it and gathering their output's statistics "
                             "(experimental)")
    parser.add_argument("--tuning", type=Path,
                        help="per-layer kernel choices measured on this GPU by the sweeps under benchmarks/, or "
                             "'none' for the kernels' defaults (default: the file $EFFNET_TUNING names, else the "
                             "one effnet ships for this GPU, if any)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per repeat")
    parser.add_argument("--output", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.bench.throughput import BenchConfig, format_table, run_benchmark
    from effnet.fast import tuning

    if not args.fast:
        asked = [flag for flag, on in (("--fuse-expansion", args.fuse_expansion), ("--unfused-stem", args.unfused_stem),
                                       ("--triton-depthwise", args.triton_depthwise),
                                       ("--fused-training", args.fused_training)) if on]
        if asked:
            raise EffnetError(f"{' and '.join(asked)} add fast-path rows, which --no-fast leaves out")
    if args.tuning:
        tuning.use(args.tuning)  # ('none': the kernels' defaults)
    config = BenchConfig(model=args.model, device=args.device, batch_size=args.batch_size,
                         image_size=args.image_size, precision=args.precision, memory_format=args.memory_format,
                         tasks=tuple(args.task), modes=tuple(args.mode), libraries=tuple(args.libraries),
                         fast=args.fast, memory_savers=tuple(args.memory_saver),
                         fuse_expansion=args.fuse_expansion, unfused_stem=args.unfused_stem,
                         triton_depthwise=args.triton_depthwise, fused_training=args.fused_training,
                         warmup=args.warmup,
                         repeats=args.repeats, iterations=args.iterations)
    if args.output:
        check_writable(args.output, "--output")
    result = run_benchmark(config)
    document = result.to_json()
    if args.output:
        write_text(args.output, json.dumps(document, indent=2), "--output")
    if args.json:
        print_json(document)
    else:
        env = result.environment
        print(f"{config.model} on {env.get('gpu', env['device'])}: batch {result.config['batch_size']}, "
              f"{result.config['precision']}, {result.config['memory_format']}, torch {env['torch']}")
        print(format_table(result))
    return 0
