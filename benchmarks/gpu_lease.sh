#!/usr/bin/env bash
# The first call of a GPU lease (B0): short sweeps of B0's inference kernels write a tuning file (each layer's
# fastest kernel and tiles, where it beats the default by 3% plus the layer's timing noise; the rolling-row
# depthwise kernel, slower on every layer in run 5, is left out), then gpu_check.py proves the fast paths equal
# the reference with those choices and times B0's rows, goal rows first, skipping what would end after the
# time left, and profiles a fused forward and a training step. Everything it writes lands in OUT (a log, the
# tuning file, three JSON documents).
#     OUT=results/ bash benchmarks/gpu_lease.sh [SECONDS]      # SECONDS: the whole call (default 560)
# On a lease, with the compile caches of the last one (carry [".compile_cache"]; packing takes ~10 s, and
# writes up to three more files to OUT, eight in all):
#     OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh 530
# The second call, on the still-warm machine (B4: its fused-model checks and its goal rows), after copying the
# returned tuning.json to the tree and the returned compile_cache.part* to .compile_cache/:
#     OUT=$OUT bash benchmarks/with_compile_cache.sh env PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT \
#         --tuning tuning.json --only efficientnet_b4 --budget-s 200
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
  timeout 110 python3 benchmarks/depthwise_sweep.py --out "$OUT" --tuning "$TUNING" --configs 4 --rolling-configs 0
  echo "== 1x1 sweep"
  timeout 100 python3 benchmarks/pointwise_sweep.py --out "$OUT" --tuning "$TUNING" --configs 2
  LEFT=$((TOTAL - SECONDS - 50))  # the two profiles, the table and the goal lines after the last row
  echo "== gpu_check (B0), $LEFT s for its checks and rows"
  TUNED=()
  if [ -f "$TUNING" ]; then TUNED=(--tuning "$TUNING"); fi
  python3 benchmarks/gpu_check.py --out "$OUT" "${TUNED[@]}" --only efficientnet_b0 --budget-s "$LEFT" \
    --profile --profile-training
} 2>&1 | tee "$LOG"
