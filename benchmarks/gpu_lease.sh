#!/usr/bin/env bash
# A whole GPU lease in one call: short per-layer sweeps of B0 write a tuning file (each layer's fastest
# kernel and tiles, where it beats the default by 3%), then gpu_check.py proves the fast paths equal
# the reference with those choices and times the goal rows, skipping what would start after the time
# left. Everything it writes lands in OUT (six files: one log, the tuning file, four JSON documents).
#     OUT=results/ bash benchmarks/gpu_lease.sh [SECONDS]      # SECONDS: the whole call (default 560)
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_lease_out}
TOTAL=${1:-560}
TUNING="$OUT/tuning.json"
LOG="$OUT/lease.log"
mkdir -p "$OUT"
rm -f "$TUNING"
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  echo "== depthwise (inference) sweep"
  timeout 110 python3 benchmarks/depthwise_sweep.py --out "$OUT" --tuning "$TUNING" --configs 4
  echo "== 1x1 sweep"
  timeout 100 python3 benchmarks/pointwise_sweep.py --out "$OUT" --tuning "$TUNING" --configs 2
  echo "== depthwise (training) gradient sweep"
  timeout 100 python3 benchmarks/depthwise_train_sweep.py --out "$OUT" --tuning "$TUNING" --configs 4
  LEFT=$((TOTAL - SECONDS - 80))  # the training profile, the table and the goal lines after the last row
  echo "== gpu_check, $LEFT s for its checks and rows"
  if [ -f "$TUNING" ]; then
    python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$TUNING" --budget-s "$LEFT" --profile-training
  else
    python3 benchmarks/gpu_check.py --out "$OUT" --budget-s "$LEFT" --profile-training
  fi
} 2>&1 | tee "$LOG"
