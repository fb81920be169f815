"""How many bytes the fused training step's partial sums cost, on PyTorch's meta device (no GPU, seconds).

The fused training kernels add no partial sum atomically (deterministic): each program writes its own row of
partial sums, and a reduction after the kernel adds them up in order, PyTorch's `sum` for the gradients'
(dweight, dscale, dshift, dgate) and `bn_stats.merge_moments` for the batch statistics. Those rows are written
by the kernel and read back by the reduction, traffic beside the activations' that no profile names. This script
walks a training step's fused passes as `compile_check.py` does (the host code the lease runs, its kernels not
run) and prints the float32 bytes each reduction reads, by the line that calls it, and the 1x1 weight
gradients' chunked partials layer by layer beside the bytes those kernels read:

    PYTHONPATH=src .venv/bin/python benchmarks/partial_sums.py --model efficientnet_b0 --batch 128
"""
from __future__ import annotations

import argparse
import collections
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import compile_check  # noqa: E402
from effnet.fast import bn_pointwise as bnp  # noqa: E402
from effnet.fast import bn_stats  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    compile_check.BATCH, compile_check.SIZE, compile_check.DTYPE = args.batch, None, torch.bfloat16
    sums, calls, chunked = collections.Counter(), collections.Counter(), []
    real_sum, real_merge, real_weight_grad = torch.Tensor.sum, bn_stats.merge_moments, bnp._weight_grad

    def counted_sum(self, *rest, **options):
        if self.device.type == "meta":
            caller = traceback.extract_stack(limit=2)[0]
            where = f"{Path(caller.filename).name}:{caller.lineno}"
            sums[where] += self.numel() * self.element_size()
            calls[where] += 1
            if caller.name == "_weight_grad" and self.dim() == 3:  # the 1x1 weight gradient's (chunks, out, in)
                chunked.append(self.shape[0])
        return real_sum(self, *rest, **options)

    def counted_merge(block_sums, m2, counts):
        sums["bn_stats.merge_moments"] += block_sums.numel() * 4 * 2  # each block's sum and squared deviations
        calls["bn_stats.merge_moments"] += 1
        return real_merge(block_sums, m2, counts)

    layers = []

    def counted_weight_grad(dy, stats, x, y, weight, *rest, **options):
        result = real_weight_grad(dy, stats, x, y, weight, *rest, **options)
        layers.append((weight.shape[1], weight.shape[0], x.shape[2], x.numel() // x.shape[1], chunked[-1]))
        return result

    merging = [m for m in list(sys.modules.values()) if getattr(m, "merge_moments", None) is real_merge]
    torch.Tensor.sum, bnp._weight_grad = counted_sum, counted_weight_grad
    for module in merging:
        module.merge_moments = counted_merge
    try:
        compile_check._training_launches(args.model)
    finally:
        torch.Tensor.sum, bnp._weight_grad = real_sum, real_weight_grad
        for module in merging:
            module.merge_moments = real_merge
    print(f"{args.model}, one fused training step at batch {args.batch}: partial sums read back (float32)")
    for where, size in sums.most_common():
        print(f"  {where:28} {calls[where]:4} calls {size / 1e6:9.1f} MB")
    print(f"  {'in all':28} {sum(calls.values()):4} calls {sum(sums.values()) / 1e6:9.1f} MB "
          "(each also written once by its kernel)")
    print("\n1x1 weight gradients: the chunks' partials (written and read) against the rows the kernel reads")
    print(f"  {'in':>5} {'out':>5} {'px':>4} {'rows':>8} {'chunks':>6} {'partials MB':>11} {'rows MB':>8} {'ratio':>6}")
    for cin, cout, height, rows, chunks in layers:
        partials = 2 * chunks * cin * cout * 4  # written by the kernel, read by the sum
        read = rows * (cin + 2 * cout) * 2  # x, and dy and y (bf16)
        print(f"  {cin:5} {cout:5} {height:4} {rows:8} {chunks:6} {partials / 1e6:11.1f} {read / 1e6:8.1f} "
              f"{partials / read:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
