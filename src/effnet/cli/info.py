"""`effnet info NAME`: a model's size, cost, numerics and stage table, from its spec alone."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from effnet.cli.output import billions, format_table, millions, print_json
from effnet.models import get_entry
from effnet.scaling import resolve, spec_cost


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="show a model's parameters, MACs and stages",
                                 description="Show a model's parameters, MACs, numerics and stage table.")
    parser.add_argument("name", help="a model name from `effnet list`")
    parser.add_argument("--resolution", type=int, help="input size for MACs (default: the model's own)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


# How the stage table names each block kind (MBConv by its expand ratio, as the paper does).
_BLOCK_LABELS = {"mbconv": "MBConv{ratio:g}", "dsconv": "DSConv", "bottleneck": "Bottleneck{ratio:g}"}


def describe(name: str, resolution: int | None = None, num_classes: int = 1000) -> dict[str, Any]:
    entry = get_entry(name)
    spec = entry.spec if resolution is None else replace(entry.spec, resolution=resolution)
    plan = resolve(spec)
    cost = spec_cost(spec, num_classes=num_classes)
    stages = [
        {"stage": index + 1, "block": _BLOCK_LABELS[stage_spec.block].format(ratio=stage_spec.expand_ratio),
         "kernel": stage_spec.kernel_size, "stride": stage_spec.stride, "channels": blocks[0].out_channels,
         "repeats": len(blocks), "se": blocks[0].se_channels > 0}
        for index, (stage_spec, blocks) in enumerate(zip(spec.stages, plan.stages))
    ]
    return {
        "name": name,
        "description": entry.description,
        "params": cost.params,
        "macs": cost.macs,
        "resolution": spec.resolution,
        "width": spec.width,
        "depth": spec.depth,
        "dropout": spec.head.dropout,
        "drop_path_rate": spec.drop_path_rate,
        "activation": spec.activation,
        "padding": spec.padding,
        "bn_eps": spec.bn_eps,
        "bn_momentum": spec.bn_momentum,
        "stem": {"channels": plan.stem_channels, "kernel": plan.stem_kernel_size, "stride": plan.stem_stride,
                 "pool": plan.stem_pool},
        "head_channels": plan.head_channels,
        "stages": stages,
        "data_config": entry.data_config.as_dict(),
    }


def run(args: argparse.Namespace) -> int:
    report = describe(args.name, args.resolution, args.num_classes)
    if args.json:
        print_json(report)
        return 0
    print(f"{report['name']}: {report['description']}")
    print(f"params {millions(report['params'])} ({report['params']:,})   "
          f"MACs {billions(report['macs'])} at {report['resolution']}px   dropout {report['dropout']}   "
          f"drop path {report['drop_path_rate']}")
    print(f"activation {report['activation']}   padding {report['padding']}   BN eps {report['bn_eps']:g} "
          f"momentum {report['bn_momentum']:g}")
    stem = report["stem"]
    stem_block = "conv + max pool" if stem["pool"] == "max" else "conv"
    rows = [("stem", stem_block, stem["kernel"], stem["stride"], stem["channels"], 1, "")]
    rows += [(s["stage"], s["block"], s["kernel"], s["stride"], s["channels"], s["repeats"], "yes" if s["se"] else "")
             for s in report["stages"]]
    if report["head_channels"]:  # else (ResNet, MobileNetV1) the classifier reads the last stage
        rows.append(("head", "conv1x1", 1, 1, report["head_channels"], 1, ""))
    print(format_table(("stage", "block", "kernel", "stride", "channels", "repeats", "SE"), rows))
    return 0
