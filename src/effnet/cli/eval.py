"""`effnet eval --weights PATH --data DIR|builtin|...`: top-1, top-5, loss and per-class accuracy of saved weights."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from effnet.cli.output import check_writable_folder, format_table, print_json
from effnet.fast import BACKENDS

TABLE_MAX_CLASSES = 30  # a longer per-class table belongs in --output's per_class.csv


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval", help="evaluate saved weights on a data set (top-1, top-5, loss, per class)",
        description="Evaluate an effnet weights file or run folder with its own preprocessing. DIR/train + DIR/val: "
                    "the val split; DIR/train only: the val fraction held out in training; a plain DIR/<class>/ "
                    "tree: all of it. Named data sets use their val (test) split. The data's class names must "
                    "be the weights' class names, in the same order.")
    parser.add_argument("--weights", required=True, type=Path, help="a .safetensors file or a run folder")
    parser.add_argument("--data", help="builtin, fashion-mnist, cifar10, cifar100 or a folder "
                                       "(default: the data set the weights were trained on)")
    parser.add_argument("--data-root", type=Path, help="where downloadable data sets live")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="which split (default val)")
    parser.add_argument("--ema", action="store_true", help="evaluate the run folder's model_ema.safetensors")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, help="evaluate at this resolution (default: the weights')")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes (default 0)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="fast: the model with BN folded, channels-last and fused MBConv blocks, bf16 on a GPU "
                             "(as effnet predict --backend fast)")
    parser.add_argument("--output", type=Path, help="also write eval.json, confusion.csv/.png and per_class.csv here")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.data import SkippedFileWarning
    from effnet.inference import evaluate_weights, write_report

    if args.output:
        check_writable_folder(args.output, "--output")
    with warnings.catch_warnings():
        # The report lists every skipped file with its reason; a warning per file would repeat it.
        warnings.simplefilter("ignore", SkippedFileWarning)
        report = evaluate_weights(args.weights, args.data, split=args.split, batch_size=args.batch_size,
                                  device=args.device, ema=args.ema, image_size=args.image_size,
                                  workers=args.workers, data_root=args.data_root, backend=args.backend)
    written = write_report(report, args.output) if args.output else []
    if args.json:
        print_json(report)
        return 0
    backend = " (fast backend)" if report["backend"] == "fast" else ""
    print(f"{report['model']}{backend} on {report['data']} ({report['split']}, {report['count']} images at "
          f"{report['image_size']}px): top-1 {report['top1']:.2f}%  top-5 {report['top5']:.2f}%  "
          f"loss {report['loss']:.4f}")
    names = report["class_names"]
    if len(names) <= TABLE_MAX_CLASSES:
        rows = [(name, report["per_class_count"][name],
                 "-" if report["per_class_accuracy"][name] is None else f"{report['per_class_accuracy'][name]:.2f}")
                for name in names]
        print(format_table(("class", "images", "top-1 %"), rows))
    for item in report["skipped"]:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    if written:
        print(f"wrote {', '.join(str(path) for path in written)}")
    return 0
