"""`effnet data check DIR`: find bad images and unusable classes in an image-folder tree before training.

Exit status: 0 when the tree is clean, 1 when bad files or problems were found (so a script or CI
step can stop on it), 2 when DIR cannot be checked at all (missing, not a folder).
"""
from __future__ import annotations

import argparse

from effnet.cli.output import print_json

EXIT_CLEAN = 0
EXIT_FOUND_BAD = 1


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="data set tools (check)", description="Data set tools.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="report bad image files and empty classes in DIR",
        description="Decode every image of DIR/train, DIR/val or DIR/<class>/ and report bad files with reasons, "
                    "image counts per class, and problems that would stop training.",
        epilog="exit status: 0 the tree is clean; 1 bad files or problems were found; 2 DIR cannot be checked.")
    check.add_argument("directory", metavar="DIR", help="image-folder tree")
    check.add_argument("--quick", action="store_true",
                       help="read headers only (faster; misses truncated images)")
    check.add_argument("--workers", type=int, default=0, help="check files in this many processes (default 0)")
    check.add_argument("--json", action="store_true",
                       help="print the report as JSON (bad_files: path, reason, split, class_name)")
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    from effnet.data import DataError, scan_dataset

    if args.workers < 0:
        raise DataError(f"--workers must be 0 or more, got {args.workers}")
    report = scan_dataset(args.directory, full_decode=not args.quick, workers=args.workers)
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.to_text())
    return EXIT_CLEAN if report.ok and not report.bad_files else EXIT_FOUND_BAD
