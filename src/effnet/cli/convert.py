"""`effnet convert --from SOURCE --model NAME IN OUT.safetensors`: a peer checkpoint to an effnet file."""
from __future__ import annotations

import argparse
from pathlib import Path



def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "convert", help="convert a peer's checkpoint into a self-contained effnet .safetensors",
        description="Convert a timm, torchvision or EfficientNet-PyTorch checkpoint (.pth/.pt/.bin/.safetensors) "
                    "into an effnet weights file that stores its spec and preprocessing.")
    parser.add_argument("--from", dest="source", required=True,
                        help="checkpoint format: timm, torchvision or efficientnet_pytorch")
    parser.add_argument("--model", required=True, help="effnet model to load it into, e.g. tf_efficientnet_b0")
    parser.add_argument("input", type=Path, metavar="IN", help="the peer checkpoint")
    parser.add_argument("output", type=Path, metavar="OUT.safetensors", help="where to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.weights.convert import convert_checkpoint

    out = convert_checkpoint(args.input, args.source, args.model, args.output)
    print(f"wrote {out} ({args.model}, from {args.source})")
    return 0
