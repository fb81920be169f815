"""The `effnet` command line: one small module per command, each only parsing and calling the library."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Sequence

from effnet.cli import bench, convert, curves, data, export, info, list_models, predict, scale, search, train
from effnet.cli import eval as eval_command
from effnet.errors import EffnetError, EffnetWarning

COMMANDS = (list_models, info, scale, search, curves, convert, export, train, eval_command, predict, data, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effnet", description="EfficientNet and compound model scaling.")
    from effnet import __version__

    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def _one_line_warnings(default: Callable) -> Callable:
    """A `warnings.showwarning` that prints effnet's own warnings as one `warning: ...` line (not the file, line
    number and source line) and hands the others to `default`."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, EffnetWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user mistakes print one `effnet: error: ...` line and return 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.run(args) or 0)
    except EffnetError as error:
        print(f"effnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `effnet ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
