"""`effnet predict IMAGE... (--weights PATH | --model NAME)`: top-k classes per image."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet.cli.output import print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="classify images with saved weights (top-k labels and probabilities)",
        description="Classify images with an effnet weights file or run folder, using the model's own evaluation "
                    "preprocessing. Labels are the class names saved with the weights, ImageNet's for a "
                    "1000-class model without names, else class_<i>.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                        help="image files, or folders of them (searched recursively, in name order; given a "
                             "folder, a file that is not an image or cannot be decoded is skipped with a warning)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="a .safetensors file or a run folder")
    source.add_argument("--model", help="a registered model name, with random weights (a pipeline check)")
    parser.add_argument("--ema", action="store_true", help="use the run folder's model_ema.safetensors")
    parser.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--backend", choices=("torch", "fast", "onnxruntime"), default="torch",
                        help="eager PyTorch (default); fast: BN folded, channels-last, fused blocks (bf16 on a "
                             "GPU); or onnxruntime on the CPU (exports the model to ONNX first, checked against "
                             "PyTorch, unless --onnx names an exported file)")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="with --backend onnxruntime: an ONNX file exported from the same weights")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"image": PATH, "topk": [{"index", "label", "prob"}, ...]}')
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.inference import InferenceError, Predictor, image_files

    backend = {"backend": args.backend, "onnx_path": args.onnx, "intra_op_threads": args.threads}
    if args.backend != "onnxruntime" and (args.onnx is not None or args.threads is not None):
        raise InferenceError("--onnx and --threads need --backend onnxruntime")
    images = image_files(args.images)  # a folder's files, before any model is built
    if args.model is not None:
        if args.ema:
            raise InferenceError("--ema needs --weights (a run folder)")
        predictor = Predictor.from_model(args.model, device=args.device, batch_size=args.batch_size, **backend)
        print(f"note: {args.model} has random weights (effnet bundles none); the labels mean nothing",
              file=sys.stderr)
    else:
        predictor = Predictor.from_weights(args.weights, device=args.device, batch_size=args.batch_size,
                                           ema=args.ema, **backend)
    # Given a folder, a file that passed the header check yet cannot be decoded is one warning line and left out
    # (its results are None); where only files are named, such a file stops the run with one error line.
    folders = any(Path(path).is_dir() for path in args.images)
    results = predictor.predict([str(path) for path in images], topk=args.topk, skip_unreadable=folders)
    read = [(path, topk) for path, topk in zip(images, results) if topk is not None]
    if not read:
        raise InferenceError("none of the images could be read")
    if args.json:
        print_json([{"image": str(path), "topk": topk} for path, topk in read])
        return 0
    for path, topk in read:
        print(path)
        for rank, guess in enumerate(topk, start=1):
            print(f"  {rank}. {guess['label']} [{guess['index']}]  {100 * guess['prob']:.2f}%")
    return 0
