"""`effnet list [PATTERN]`: registered model names."""
from __future__ import annotations

import argparse

from effnet.cli.output import print_json
from effnet.errors import UnknownModelError
from effnet.models import list_models


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list registered models", description="List registered models.")
    parser.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'tf_*lite*'")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if args.json:
        print_json(names)
    elif not names:
        raise UnknownModelError(f"no registered model matches {args.pattern!r}; `effnet list` shows them all")
    else:
        print("\n".join(names))
    return 0
