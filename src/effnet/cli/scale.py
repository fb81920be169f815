"""`effnet scale`: the family table (official rows, or compound scaling for any phi)."""
from __future__ import annotations

import argparse

from effnet.cli.output import billions, format_table, millions, print_json
from effnet.models import get_entry
from effnet.scaling.family import compound_family, formula_multipliers, official_family
from effnet.scaling.rules import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "scale", help="print a compound-scaled family with params and MACs",
        description="Without --phi: the official EfficientNet-B0..B7 rows, beside what d=alpha^phi, "
                    "w=beta^phi, r=gamma^phi would give. With --phi: the base scaled by those formulas.")
    parser.add_argument("--phi", type=float, nargs="+", metavar="PHI",
                        help="compound coefficients (fractional and negative allowed), e.g. --phi -1 0 0.5 1 2")
    parser.add_argument("--alpha", type=float, default=PAPER_ALPHA, help="depth base (default %(default)s)")
    parser.add_argument("--beta", type=float, default=PAPER_BETA, help="width base (default %(default)s)")
    parser.add_argument("--gamma", type=float, default=PAPER_GAMMA, help="resolution base (default %(default)s)")
    parser.add_argument("--base", default="efficientnet_b0", help="registered base model (default %(default)s)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.phi is None:
        members = official_family(num_classes=args.num_classes)
    else:
        base = get_entry(args.base).spec
        members = compound_family(args.phi, base, args.alpha, args.beta, args.gamma, args.num_classes)
    if args.json:
        print_json([member.as_dict() for member in members])
        return 0
    rows = []
    for m in members:
        d, w, r = formula_multipliers(m.phi, args.alpha, args.beta, args.gamma)
        formula = f"{d:.2f} / {w:.2f} / {round(224 * r)}"
        rows.append((m.name, f"{m.phi:g}", f"{m.depth:.3g}", f"{m.width:.3g}", m.resolution,
                     millions(m.params), billions(m.macs), formula))
    print(format_table(("model", "phi", "depth", "width", "resolution", "params", "MACs",
                        "alpha^phi / beta^phi / 224*gamma^phi"), rows))
    if args.phi is None:
        print(f"\nThe released rows are hand-picked; the last column is eq. 3 with alpha={args.alpha}, "
              f"beta={args.beta}, gamma={args.gamma}. Use --phi for the formula's family.")
    return 0
