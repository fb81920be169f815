#!/usr/bin/env bash
# The first call of a GPU lease (B0): short sweeps of B0's inference kernels write a tuning file (each layer's
# fastest kernel and tiles, where it beats the default by 3%), then gpu_check.py proves the fast paths equal
# the reference with those choices and times B0's rows, goal rows first, skipping what would end after the
# time left. Everything it writes lands in OUT (a log, the tuning file, three JSON documents).
#     OUT=results/ bash benchmarks/gpu_lease.sh [SECONDS]      # SECONDS: the whole call (default 560)
# The second call, on the still-warm machine (B4: its fused-model checks and its goal rows):
#     PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT --tuning tuning.json --only efficientnet_b4 --budget-s 200
# The training gradient sweep (depthwise_train_sweep.py) is in gpu_sweeps.sh: the training rows run the default
# gradient tiles, and --profile-training shows where a training step's time goes.
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
  LEFT=$((TOTAL - SECONDS - 40))  # the training profile, the table and the goal lines after the last row
  echo "== gpu_check (B0), $LEFT s for its checks and rows"
  TUNED=()
  if [ -f "$TUNING" ]; then TUNED=(--tuning "$TUNING"); fi
  python3 benchmarks/gpu_check.py --out "$OUT" "${TUNED[@]}" --only efficientnet_b0 --budget-s "$LEFT" \
    --profile-training
} 2>&1 | tee "$LOG"
