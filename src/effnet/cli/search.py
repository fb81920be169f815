"""`effnet search`: step 1 of the paper, grid-search alpha, beta, gamma on your data."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from effnet.cli.output import format_table, print_json


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "search", help="grid-search the compound-scaling coefficients alpha, beta, gamma on your data",
        description="Scale the base by depth alpha, width beta, resolution gamma (phi = 1) for every grid point "
                    "whose measured MACs ratio is within --tolerance of --target, train each the same way, "
                    "and pick the best top-1. Finished candidates are never retrained on a rerun.")
    parser.add_argument("--base", default="efficientnet_b0",
                        help="registered base model or a spec file, e.g. from `effnet scale --save-spec` "
                             "(default %(default)s)")
    parser.add_argument("--data", default="builtin", help="as for `effnet train` (default: built-in digits)")
    parser.add_argument("--image-size", type=int, help="the base's training size (default: the data set's)")
    parser.add_argument("--target", type=float, default=2.0, help="MACs multiplier at phi = 1 (default 2)")
    parser.add_argument("--tolerance", type=float, default=0.1, help="relative tolerance on it (default 0.1)")
    parser.add_argument("--alpha", default=None, help="depth grid: 1.0,1.1,1.2 or 1.0:1.4:0.1")
    parser.add_argument("--beta", default=None, help="width grid")
    parser.add_argument("--gamma", default=None, help="resolution grid")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per candidate")
    parser.add_argument("--minutes", type=float, help="training-time budget per candidate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=1, help="candidates trained at once on this machine")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids, assigned round-robin")
    parser.add_argument("--ray", metavar="ADDRESS", help="run candidates as Ray tasks ('local' starts a cluster)")
    parser.add_argument("--train-arg", action="append", default=[], metavar="OPTION",
                        help="extra `effnet train` option for every candidate, e.g. --train-arg=--batch-size=64")
    parser.add_argument("--output", type=Path, required=True, help="search folder")
    parser.add_argument("--json", action="store_true", help="print search.json")
    parser.set_defaults(run=run)


def load_base(name_or_file: str):  # noqa: ANN201 - a NetworkSpec
    """A registered model's spec, or a spec file (JSON or YAML)."""
    if Path(name_or_file).is_file():
        from effnet.spec import spec_from_dict
        from effnet.train.config import read_config_file

        return spec_from_dict(read_config_file(name_or_file))
    from effnet.models import get_entry

    return get_entry(name_or_file).spec


def _check_gpus(gpus: tuple[str, ...]) -> None:
    """Each id (an index, or a UUID as CUDA_VISIBLE_DEVICES takes it) names a GPU here, before any run starts."""
    from effnet.devices import resolve_device
    from effnet.errors import DeviceError, EffnetError

    try:
        for gpu in gpus:
            resolve_device(f"cuda:{gpu}" if gpu.isdigit() else "cuda")
    except DeviceError as error:
        raise EffnetError(f"--gpus {','.join(gpus)}: {error}") from None


def run(args: argparse.Namespace) -> int:
    from effnet.search import SearchConfig, parse_values, run_search
    from effnet.search.grid import DEFAULT_ALPHAS, DEFAULT_BETAS, DEFAULT_GAMMAS
    from effnet.train.config import DATASET_DEFAULTS

    gpus = tuple(g for g in args.gpus.split(",") if g)
    if gpus and args.ray is None:
        _check_gpus(gpus)
    base = load_base(args.base)
    size = args.image_size or DATASET_DEFAULTS.get(args.data, {}).get("image_size", base.resolution)
    config = SearchConfig(
        base=replace(base, resolution=size), output=args.output, data=args.data, target=args.target,
        tolerance=args.tolerance,
        alphas=parse_values(args.alpha) if args.alpha else DEFAULT_ALPHAS,
        betas=parse_values(args.beta) if args.beta else DEFAULT_BETAS,
        gammas=parse_values(args.gamma) if args.gamma else DEFAULT_GAMMAS,
        epochs=args.epochs, minutes=args.minutes, seed=args.seed, parallel=args.parallel,
        gpus=gpus, ray_address=args.ray, train_args=list(args.train_arg))
    report = run_search(config)
    if args.json:
        print_json(report)
        return 0
    rows = [(r["alpha"], r["beta"], r["gamma"], f"{r['product']:.3f}", f"{r['macs_ratio']:.3f}",
             f"{r['params'] / 1e6:.2f}M", "" if r["top1"] is None else f"{r['top1']:.2f}", f"{r['wall_seconds']:.0f}",
             r["status"]) for r in report["candidates"]]
    print(format_table(("alpha", "beta", "gamma", "a*b^2*g^2", "MACs ratio", "params", "top-1", "seconds",
                        "status"), rows))
    chosen = report["chosen"]
    print(f"\nchosen: alpha={chosen['alpha']:g} beta={chosen['beta']:g} gamma={chosen['gamma']:g} "
          f"(top-1 {chosen['top1']:.2f}%); MACs ratio is measured on the rounded networks, so it differs from "
          f"the product. Next: effnet scale --coefficients {args.output}/search.json --max-macs ...")
    return 0
