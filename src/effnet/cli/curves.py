"""`effnet curves`: width-, depth-, resolution-only and compound scaling at matched MACs, trained and plotted."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from effnet.cli.output import format_table, print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "curves", help="compare single-dimension and compound scaling on your data (the paper's Figure 3)",
        description="Scale the base by width only, depth only, resolution only and compound (phi) to each MACs "
                    "multiple, train every network the same way, write curves.csv, curves.json and curves.png.")
    parser.add_argument("--base", default="efficientnet_b0", help="registered base model or a spec file")
    parser.add_argument("--data", default="builtin", help="as for `effnet train`")
    parser.add_argument("--image-size", type=int, help="the base's training size (default: the data set's)")
    parser.add_argument("--multiples", type=float, nargs="+", default=[2.0, 4.0], help="MACs multiples of the base")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--coefficients", type=Path, help="alpha, beta, gamma JSON (e.g. search.json)")
    parser.add_argument("--train-arg", action="append", default=[], metavar="OPTION")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnet.cli.scale import coefficients
    from effnet.cli.search import load_base
    from effnet.search.curves import CurvesConfig, run_curves
    from effnet.train.config import DATASET_DEFAULTS

    base = load_base(args.base)
    size = args.image_size or DATASET_DEFAULTS.get(args.data, {}).get("image_size", base.resolution)
    config = CurvesConfig(base=replace(base, resolution=size), output=args.output, multiples=tuple(args.multiples),
                          data=args.data, epochs=args.epochs, seed=args.seed, parallel=args.parallel,
                          coefficients=coefficients(args.coefficients), train_args=list(args.train_arg))
    rows = run_curves(config)
    if args.json:
        print_json(rows)
        return 0
    def percent(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    print(format_table(("strategy", "MACs x", "multiplier", "resolution", "MACs", "top-1", "EMA top-1", "status"),
                       [(r["strategy"], f"{r['macs_ratio']:.2f}", r["multiplier"], r["resolution"],
                         f"{r['macs'] / 1e6:.1f}M", percent(r["top1"]), percent(r["ema_top1"]), r["status"])
                        for r in rows]))
    for row in rows:
        if row["note"]:
            print(f"note: {row['strategy']} x{row['macs_multiple']:g}: {row['note']}")
    print(f"\nwrote {args.output}/curves.csv, curves.json and curves.png")
    return 0
