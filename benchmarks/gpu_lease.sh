#!/usr/bin/env bash
# A GPU lease in two calls, for B0's fused training (effnet-ftrain). Run 6 proved every fast path on the H100
# (18/18 checks, the fused training gradients in float32, bf16 and compiled among them) and profiled an eager
# step: the fused kernels kept the GPU busy 44 ms per batch of 128, the plain step's cuDNN and PyTorch kernels
# 29.5 ms, and the step's wall time was 180 ms (launch-bound). Session 11 removed three causes it found
# without a GPU (benchmarks/RESULTS.md). This lease asks where the kernels' time goes now: the fused training
# sweeps, layer by layer, each pass apart, checked and timed against eager PyTorch and the bare cuDNN
# convolution (their winners go to the tuning file), and Nsight Compute's view of the two weight-gradient
# kernels; then the fused training's gradient checks and, with those tiles, B0's training rows against timm.
#     call 1:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh sweeps
#     call 2:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh rows [SECONDS]
#     or:      OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh b4 [SECONDS]
# (carry [".compile_cache"] with both). Call 2 must follow on the still-warm machine: the tuning file stays
# in $KEEP there between the calls (a fresh machine starts from run 6's file). Each call writes a log, its
# JSON documents and the packed compile caches to OUT (at most eight files).
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_lease_out}
KEEP=${KEEP:-/tmp/effnet_lease}
STAGE=${1:-sweeps}
mkdir -p "$OUT" "$KEEP"
[ -f "$KEEP/tuning.json" ] || cp benchmarks/results/2026-11-27_h100_run6_tuning.json "$KEEP/tuning.json"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)

ncu_kernel() {  # KERNEL SWEEP LAYER: one launch of KERNEL in that sweep's layer, the sections that say why
  [ -n "$NCU" ] || return 0
  echo "== Nsight Compute: $1 ($2 layer $3)"
  timeout 60 "$NCU" --clock-control none -k "regex:$1" -c 1 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    python3 "benchmarks/$2.py" --layers "$3" --configs 0 --no-compile > "$KEEP/ncu_$1.txt" 2>&1
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|Theoretical Occ|Block Size|Grid Size|Waves Per SM|Stall|Warp Cycles Per Issued" \
    "$KEEP/ncu_$1.txt" | head -24
}

case "$STAGE" in
  sweeps)
    {
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
      python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
      echo "== bn_pointwise sweep (B0's 1x1 training layers, batch 256)"
      timeout 170 python3 benchmarks/bn_pointwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" --configs 3 \
        --no-compile
      echo "== bn_depthwise sweep (B0's depthwise training layers, batch 256)"
      timeout 120 python3 benchmarks/bn_depthwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" --configs 3 \
        --no-compile
      ncu_kernel _pw_weight_grad_kernel bn_pointwise_sweep 0   # the 16 -> 96 expansion at 112 px
      ncu_kernel _dw_weight_grad_kernel bn_depthwise_sweep 1   # 96 channels, 3x3 stride 2, from 112 px
      cat "$KEEP"/ncu_*.txt > "$OUT/ncu.txt" 2>/dev/null
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  rows)
    # the CUDA-graph tests (skipped without a GPU), then the rows
    python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_fast.py -k cuda_graph 2>&1 | tail -3 | tee "$OUT/lease.log"
    # the fused training's gradients against the plain model's first (its kernels changed since run 6)
    python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 --checks ftrain \
      --tasks training --budget-s "${2:-240}" --profile-training 2>&1 | tee -a "$OUT/lease.log"
    ;;
  b4)
    # B4's inference rows (timm compiled against the fused path with a CUDA graph): the goal closest to met
    # (tf_B4's fused model checked against the float32 model first: the inference kernels' loads changed)
    python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b4 --checks models \
      --tasks inference --budget-s "${2:-200}" 2>&1 | tee "$OUT/lease.log"
    ;;
  *)
    echo "gpu_lease.sh: unknown stage '$STAGE' (sweeps, rows or b4)" >&2
    exit 2
    ;;
esac
