"""`effnet convert [--from SOURCE] [--model NAME] IN OUT.safetensors`: a peer checkpoint to an effnet file."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "convert", help="convert a peer's checkpoint into a self-contained effnet .safetensors",
        description="Convert a timm, torchvision, EfficientNet-PyTorch, Hugging Face transformers or Keras "
                    "checkpoint (.pth/.pt/.bin/.safetensors, Keras .h5/.weights.h5/.keras, or a hub folder "
                    "with config.json) into an effnet weights file that stores its spec, preprocessing and "
                    "class names. Without --from and --model they are detected from the checkpoint.")
    parser.add_argument("--from", dest="source", default=None,
                        help="checkpoint format: timm, torchvision, efficientnet_pytorch, transformers or keras "
                             "(default: detected from the keys)")
    parser.add_argument("--model", default=None,
                        help="effnet model to load it into, e.g. tf_efficientnet_b0 "
                             "(default: detected from the shapes)")
    parser.add_argument("input", type=Path, metavar="IN", help="the peer checkpoint file or hub folder")
    parser.add_argument("output", type=Path, metavar="OUT.safetensors", help="where to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.cli.output import check_writable
    from effnet.weights.convert import convert_file

    check_writable(args.output, "OUT")  # before the checkpoint is read and converted
    result = convert_file(args.input, args.output, args.source, args.model)
    detected = f"; detected {' and '.join(result.detected)}" if result.detected else ""
    print(f"wrote {result.path} ({result.model_name}, from {result.source}{detected})")
    return 0
