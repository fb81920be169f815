"""`effnet train`: every TrainConfig field is an option; `--config FILE` supplies the rest."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from effnet.cli.output import print_json

HELP = {
    "output": "run folder: checkpoints, logs, plots, summary.json, model.safetensors",
    "model": "model name (default efficientnet_b0)",
    "phi": "compound-scale the model by phi (d=1.2^phi, w=1.1^phi, r=1.15^phi)",
    "spec": "a NetworkSpec file (JSON or YAML) to train instead of a registered model",
    "pretrained": "effnet weights (file or run folder) to start from; a new head if the classes differ",
    "data": "builtin (scikit-learn digits, offline), fashion-mnist, cifar10, cifar100, or an ImageFolder DIR",
    "recipe": "preset: paper (default) or finetune",
    "image_size": "training resolution (default: the data set's, else the model's)",
    "resume": "auto (latest checkpoint in OUTPUT, if any) or a checkpoint PATH",
    "device": "auto, cpu or cuda",
    "amp": "mixed precision: none, bf16 or fp16 (with loss scaling)",
    "checkpoint_every": "also checkpoint every N optimizer steps (0: epoch ends only)",
    "deterministic": "deterministic algorithms (bitwise-reproducible runs and resumes on CPU)",
    "memory_saver": "store less for the backward: activations (recompute BN + SiLU), stages (checkpoint "
                    "each stage) or both; default none",
    "fused_training": "every MBConv conv with its batch norms in Triton kernels (experimental; a GPU and "
                      "--channels-last)",
    "cuda_graphs": "replay each optimizer step from one CUDA graph after 3 eager ones: no host time per kernel "
                   "(a GPU, one process; not with --amp fp16, --grad-accum-steps or --memory-saver)",
}


def _option_type(field: dataclasses.Field) -> type:
    kind = str(field.type)
    return int if kind.startswith("int") else float if kind.startswith("float") else str


def register(commands: argparse._SubParsersAction) -> None:
    from effnet.train.config import TrainConfig

    parser = commands.add_parser(
        "train", help="train or fine-tune a model (the paper's recipe by default)",
        description="Train or fine-tune a model. Every option can also come from --config FILE (YAML or JSON); "
                    "options given here win. Under torchrun, runs data-parallel on every process.")
    parser.add_argument("--config", type=Path, help="YAML or JSON file of options")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if str(field.type).startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=HELP.get(field.name, f"(default {field.default})"))
        else:
            default = field.default if field.default is not None else "none"
            parser.add_argument(flag, type=_option_type(field), default=None, metavar=field.name.upper(),
                                help=HELP.get(field.name, f"(default {default})"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.train import resolve_config, train
    from effnet.train.config import TrainConfig

    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)}
    config = resolve_config(options, args.config)
    summary = train(config)
    if not summary:  # not rank 0
        return 0
    if args.json:
        print_json(summary)
    else:
        print(f"top-1 {summary['top1']:.2f}%  top-5 {summary['top5']:.2f}%  (EMA top-1 "
              f"{summary['ema_top1'] if summary['ema_top1'] is not None else float('nan'):.2f}%)  "
              f"{summary['epochs']} epochs, {summary['images_per_second']:.1f} images/s; "
              f"skipped {len(summary['skipped_files'])} file(s); weights in {config.output}/model.safetensors")
    return 0
