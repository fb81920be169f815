"""`effnet scale`: the family table (official rows, compound scaling for any phi), or the largest phi
that fits a budget of MACs, parameters or measured latency."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from effnet.cli.output import billions, check_writable, format_table, millions, print_json, write_text
from effnet.errors import SpecError
from effnet.fast import BACKENDS
from effnet.models import get_entry
from effnet.scaling.budget import largest_phi_within
from effnet.scaling.cost import spec_cost
from effnet.scaling.family import FamilyMember, compound_family, official_family
from effnet.scaling.rules import PAPER_ALPHA, PAPER_BETA, PAPER_GAMMA, compound_multipliers
from effnet.spec import spec_to_dict
from effnet.spec.types import NetworkSpec

_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def amount(text: str) -> float:
    """A number with an optional K/M/G/T suffix: `600M`, `1.5G`, `2e9`."""
    suffix = text[-1:].lower()
    try:
        return float(text[:-1]) * _SUFFIXES[suffix] if suffix in _SUFFIXES else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 600M or 1.5G, got {text!r}") from None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "scale", help="print a compound-scaled family, or the largest model within a budget",
        description="Without --phi: the official EfficientNet-B0..B7 rows, beside what d=alpha^phi, w=beta^phi, "
                    "r=gamma^phi would give. With --phi: the base scaled by those formulas. With --max-macs, "
                    "--max-params or --max-latency-ms: the largest (continuous) phi that fits.")
    parser.add_argument("--phi", type=float, nargs="+", metavar="PHI",
                        help="compound coefficients (fractional and negative allowed), e.g. --phi -1 0 0.5 1 2")
    parser.add_argument("--alpha", type=float, help=f"depth base (default {PAPER_ALPHA})")
    parser.add_argument("--beta", type=float, help=f"width base (default {PAPER_BETA})")
    parser.add_argument("--gamma", type=float, help=f"resolution base (default {PAPER_GAMMA})")
    parser.add_argument("--coefficients", type=Path, metavar="FILE",
                        help="JSON with alpha, beta, gamma (e.g. a search.json; its 'chosen' entry is used)")
    parser.add_argument("--base", default="efficientnet_b0", help="registered base model (default %(default)s)")
    parser.add_argument("--max-macs", type=amount, help="largest phi with MACs <= this (e.g. 1.5G)")
    parser.add_argument("--max-params", type=amount, help="largest phi with parameters <= this (e.g. 12M)")
    parser.add_argument("--max-latency-ms", type=float, help="largest phi with measured latency <= this")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size for --max-latency-ms")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per probe for --max-latency-ms")
    parser.add_argument("--device", default="cpu", help="device for --max-latency-ms (cpu or cuda)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="for --max-latency-ms: time the plain model or the fast path (BN folded, fused "
                             "blocks, bf16 on a GPU: what effnet predict --backend fast runs)")
    parser.add_argument("--save-spec", type=Path, metavar="FILE",
                        help="write the chosen model's spec (JSON) for `effnet train --spec FILE`")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.set_defaults(run=run)


def coefficients(file: Path | None, alpha: float | None = None, beta: float | None = None,
                 gamma: float | None = None) -> tuple[float, float, float]:
    """alpha, beta, gamma: given values win, then `file` (a search.json's 'chosen'), then the paper's."""
    found: dict = {}
    if file is not None:
        try:
            found = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SpecError(f"--coefficients {file}: {error}") from None
        found = found.get("chosen", found)
        if not all(key in found for key in ("alpha", "beta", "gamma")):
            raise SpecError(f"--coefficients {file}: needs alpha, beta and gamma")
    pick = lambda given, key, default: given if given is not None else float(found.get(key, default))  # noqa: E731
    return (pick(alpha, "alpha", PAPER_ALPHA), pick(beta, "beta", PAPER_BETA), pick(gamma, "gamma", PAPER_GAMMA))


def _budget_member(args: argparse.Namespace, base: NetworkSpec, alpha: float, beta: float,
                   gamma: float) -> FamilyMember:
    budgets = [(name, value) for name, value in (("macs", args.max_macs), ("params", args.max_params),
                                                 ("latency_ms", args.max_latency_ms)) if value is not None]
    if len(budgets) != 1:
        raise SpecError("give one budget: --max-macs, --max-params or --max-latency-ms")
    name, budget = budgets[0]
    if name == "latency_ms":
        from effnet.bench.latency import median_latency_ms

        def cost(spec):  # noqa: ANN001, ANN202
            return median_latency_ms(spec, batch_size=args.batch_size, device=args.device, repeats=args.repeats,
                                     num_classes=args.num_classes, backend=args.backend)
    else:
        def cost(spec):  # noqa: ANN001, ANN202
            return getattr(spec_cost(spec, num_classes=args.num_classes), name)
    # A measured latency is noisy and each probe builds and times a model: a coarser phi suffices.
    tolerance = 0.02 if name == "latency_ms" else 0.001
    fit = largest_phi_within(base, budget, cost, alpha=alpha, beta=beta, gamma=gamma,
                             tolerance=tolerance, label=f"max-{name.replace('_', '-')}")
    measured = spec_cost(fit.spec, num_classes=args.num_classes)
    return FamilyMember(fit.spec.name, fit.phi, fit.spec.depth, fit.spec.width, fit.spec.resolution,
                        measured.params, measured.macs, fit.spec)


def run(args: argparse.Namespace) -> int:
    if args.backend != "torch" and args.max_latency_ms is None:
        raise SpecError(f"--backend {args.backend} is for --max-latency-ms (the model it times)")
    if args.save_spec is not None:  # before a latency budget's probes
        check_writable(args.save_spec, "--save-spec")
    base = get_entry(args.base).spec  # an unknown name is an error even where the official rows ignore it
    alpha, beta, gamma = coefficients(args.coefficients, args.alpha, args.beta, args.gamma)
    budgeted = any(value is not None for value in (args.max_macs, args.max_params, args.max_latency_ms))
    if budgeted:
        members = [_budget_member(args, base, alpha, beta, gamma)]
    elif args.phi is None:
        members = official_family(num_classes=args.num_classes)
    else:
        members = compound_family(args.phi, base, alpha, beta, gamma, args.num_classes)
    if args.save_spec is not None:
        write_text(args.save_spec, json.dumps(spec_to_dict(members[-1].spec), indent=2), "--save-spec")
    if args.json:
        print_json([member.as_dict() for member in members])
        return 0
    rows = []
    for m in members:
        d, w, r = compound_multipliers(m.phi, alpha, beta, gamma)  # eq. 3, beside the rows
        rows.append((m.name, f"{m.phi:g}", f"{m.depth:.3g}", f"{m.width:.3g}", m.resolution,
                     millions(m.params), billions(m.macs), f"{d:.2f} / {w:.2f} / {round(224 * r)}"))
    print(format_table(("model", "phi", "depth", "width", "resolution", "params", "MACs",
                        "alpha^phi / beta^phi / 224*gamma^phi"), rows))
    if budgeted:
        spec_hint = f"--spec {args.save_spec}" if args.save_spec else f"--model {args.base} --phi {members[0].phi:g}"
        print(f"\ntrain it: effnet train {spec_hint} --output DIR")
    elif args.phi is None:
        print(f"\nThe released rows are hand-picked; the last column is eq. 3 with alpha={alpha}, "
              f"beta={beta}, gamma={gamma}. Use --phi for the formula's family.")
    return 0
