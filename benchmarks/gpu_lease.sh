#!/usr/bin/env bash
# The first call of a GPU lease (B0). It starts from run 5's tuning file (the inference sweeps ran in runs 3 and
# 5; their choices are in benchmarks/results/), then gpu_check.py proves the fast paths equal the reference
# (the kernels, the fused models and fused training; the training depthwise and the memory savers, unchanged
# since run 5's checks, are left out to save their compiles) and times B0's rows, goal rows first (the fused
# training path, effnet-ftrain, among them), skipping what would end after the time left, and profiles a fused
# forward and the training steps (plain, effnet-ftrain, effnet-tdw). Last, a short sweep of B4's 1x1 inference
# layers (pointwise_sweep.py: the default tiles against the same tiles on 8 warps, which stop their register
# spills on sm_90) adds its winners to the tuning file for the second call, whose B4 inference row missed its
# goal by 4% in run 5. (The other sweeps, the fused training kernels' included, are in gpu_sweeps.sh.) Everything
# it writes lands in OUT (a log, the tuning file, two JSON documents).
#     OUT=results/ bash benchmarks/gpu_lease.sh [SECONDS]      # SECONDS: the whole call (default 560)
# On a lease, with the compile caches of the last one (carry [".compile_cache"]; packing takes ~10 s, and
# writes up to three more files to OUT, eight in all):
#     OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh 530
# The second call, on the still-warm machine (B4: its fused-model checks and its goal rows), after copying the
# returned tuning.json to the tree and the returned compile_cache.part* to .compile_cache/:
#     OUT=$OUT bash benchmarks/with_compile_cache.sh env PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT \
#         --tuning tuning.json --only efficientnet_b4 --budget-s 200
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_lease_out}
TOTAL=${1:-560}
SWEEPS=100  # seconds kept for the B4 sweep at the end
TUNING="$OUT/tuning.json"
LOG="$OUT/lease.log"
mkdir -p "$OUT"
cp benchmarks/results/2026-11-27_h100_run5_tuning.json "$TUNING"
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  LEFT=$((TOTAL - SECONDS - SWEEPS - 50))  # the two profiles, the table and the goal lines after the last row
  echo "== gpu_check (B0), $LEFT s for its checks and rows"
  python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$TUNING" --only efficientnet_b0 --budget-s "$LEFT" \
    --checks kernels models ftrain --profile --profile-training
  echo "== B4 1x1 sweep (default tiles against 8 warps)"
  timeout 95 python3 benchmarks/pointwise_sweep.py --out "$OUT" --tuning "$TUNING" --model efficientnet_b4 \
    --size 380 --batch 128 --configs 1 --stream-configs 0
} 2>&1 | tee "$LOG"
