#!/usr/bin/env bash
# A GPU lease in two calls (session 12's plan; benchmarks/RESULTS.md, "Next GPU lease"). Run 6 proved every fast
# path on the H100 (18/18 checks, the fused training gradients in float32, bf16 and compiled among them) and profiled
# an eager step of the fused training (effnet-ftrain): its kernels kept the GPU busy 44 ms per batch of 128, the
# plain step's 29.5 ms. Sessions 10-12 changed those kernels without a GPU; session 12 also gave B4's narrow 1x1
# layers the streaming kernel. The calls, by what they can settle:
#     call 1:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh b4 [SECONDS]
#              three of B4's 1x1 layers swept, then B0's and B4's inference rows against timm compiled
#              (B4 inference: 1.16x in run 5, the goal 1.2x; B0's against a clean timm row)
#     call 2:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh rows [SECONDS]
#              the fused training's gradient checks (its kernels changed), B0's training rows, the profiles
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh sweeps
#              the fused training kernels' sweeps, pass by pass, and Nsight Compute on the two weight gradients
# (carry [".compile_cache"] with each). A later call on the still-warm machine takes the tuning file the earlier
# ones left in $KEEP (a fresh machine starts from run 6's file). Each call writes a log, its JSON documents and
# the packed compile caches to OUT (at most eight files).
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
    # B0's and B4's inference rows (timm compiled, from a reset compiler, against the fused path with a CUDA graph):
    # B0's to confirm its goal against a clean timm row, B4's the goal closest to met. First three of B4's 1x1
    # layers (batch 128, 380 px), one per change they test: the gated 24 -> 24 projection with its residual at
    # 190 px (run 6: 4.4x cuDNN's time, its loads then one bf16 value each; now also the gated streaming kernel),
    # the 24 -> 144 expansion at 190 px (the streaming kernel now its default) and the gated 1632 -> 272
    # projections at 12 px (x 7; run 6: 3.2x; the gate on the activations now two gate rows per tile): the
    # default, the gate on the activations, one tile set, the streaming kernel's first three; winners into the
    # tuning file and older choices the default now beats dropped. Then the fused models checked against the
    # float32 ones (the tanh SiLU, the loads) and the rows (about 100 s of checks compiling cold, B0's two rows
    # 60 s, B4's 145 s).
    {
      echo "== B4 1x1 sweep: three layers"
      timeout 100 python3 benchmarks/pointwise_sweep.py --model efficientnet_b4 --size 380 --batch 128 \
        --layers 0 1 18 --configs 1 --stream-configs 3 --out "$OUT" --tuning "$KEEP/tuning.json"
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 efficientnet_b4 \
        --checks models --tasks inference --budget-s "${2:-310}"
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  *)
    echo "gpu_lease.sh: unknown stage '$STAGE' (sweeps, rows or b4)" >&2
    exit 2
    ;;
esac
