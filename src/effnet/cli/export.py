"""`effnet export (--weights PATH | --model NAME) --format F --output FILE`: a deployable file, parity-checked."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet.cli.output import print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export", help="export to ONNX, TorchScript or torch.export, checked against eager PyTorch",
        description="Export a model with a dynamic batch size (and dynamic height and width unless --static-hw), "
                    "then load the file back with its own runtime (onnxruntime, torch.jit.load, torch.export.load) "
                    "and compare it with eager PyTorch at two batch sizes and two input sizes. A relative error "
                    "above the tolerance is an error (exit 2).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path, help="an effnet .safetensors file or a run folder")
    source.add_argument("--model", help="a registered model name, with random weights")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript", "torch-export"))
    parser.add_argument("--output", required=True, type=Path, help="the file to write (.onnx, .pt, .pt2)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument("--dynamo", action=argparse.BooleanOptionalAction, default=True,
                        help="ONNX through torch.export (default) or, with --no-dynamo, the deprecated but much "
                             "faster TorchScript-based exporter")
    parser.add_argument("--image-size", type=int, default=None,
                        help="example and check resolution R (default the model's); checks also R+1 x R+2")
    parser.add_argument("--static-hw", action="store_true", help="fix height and width to --image-size")
    parser.add_argument("--fold-batchnorm", action="store_true",
                        help="fold BatchNorm into the convolutions first (inference-only fast path)")
    # Trained weights on random inputs can reach logits in the thousands, where float32 reordering
    # alone is ~1e-4 of the largest; the tests hold random-weight models to 1e-4.
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative error allowed (1e-3)")
    parser.add_argument("--json", action="store_true", help="print the export report as one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.export import export_model, parity_sizes
    from effnet.models import create_model

    if args.model is not None:
        print(f"note: {args.model} has random weights (effnet bundles none)", file=sys.stderr)
    model = create_model(args.model if args.model is not None else args.weights)
    image_sizes = None if args.image_size is None else parity_sizes(args.image_size, not args.static_hw)
    report = export_model(model, args.format, args.output, image_sizes=image_sizes, opset=args.opset,
                          dynamo=args.dynamo, dynamic_hw=not args.static_hw, fold_bn=args.fold_batchnorm,
                          tolerance=args.tolerance, verbose=False)
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.summary())
    return 0
