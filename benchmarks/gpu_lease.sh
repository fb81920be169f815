#!/usr/bin/env bash
# The first call of a GPU lease (B0). It starts from run 5's tuning file (the inference sweeps ran in runs 3 and
# 5; their choices are in benchmarks/results/), then gpu_check.py proves the fast paths equal the reference
# (the kernels, the fused models and fused training; the training depthwise and the memory savers, unchanged
# since run 5's checks, are left out to save their compiles) and times B0's rows, goal rows first (the fused
# training path, effnet-ftrain, among them), skipping what would end after the time left, and profiles a fused
# forward and the training steps (plain, effnet-ftrain, effnet-tdw). Last, short sweeps of the fused training
# kernels (bn_pointwise_sweep.py, bn_depthwise_sweep.py: each layer's forward and gradients against PyTorch eager
# and cuDNN; cut off by their timeouts if the kernels compile slowly, their lines still in the log) show per
# layer where effnet-ftrain's time goes, and add their winners to the tuning file for the second call. Everything it writes
# lands in OUT (a log, the tuning file, three JSON documents).
#     OUT=results/ bash benchmarks/gpu_lease.sh [SECONDS]      # SECONDS: the whole call (default 560)
# On a lease, with the compile caches of the last one (carry [".compile_cache"]; packing takes ~10 s, and
# writes up to three more files to OUT, eight in all):
#     OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh 530
# The second call, on the still-warm machine (B4: its fused-model checks and its goal rows), after copying the
# returned tuning.json to the tree and the returned compile_cache.part* to .compile_cache/:
#     OUT=$OUT bash benchmarks/with_compile_cache.sh env PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT \
#         --tuning tuning.json --only efficientnet_b4 --budget-s 200
# The inference and training-depthwise sweeps are in gpu_sweeps.sh.
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_lease_out}
TOTAL=${1:-560}
SWEEPS=100  # seconds kept for the two training sweeps at the end
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
  echo "== fused training sweeps"
  timeout 45 python3 benchmarks/bn_pointwise_sweep.py --out "$OUT" --tuning "$TUNING" --configs 1 --no-compile
  timeout 50 python3 benchmarks/bn_depthwise_sweep.py --out "$OUT" --tuning "$TUNING" --configs 1 --no-compile
} 2>&1 | tee "$LOG"
