#!/usr/bin/env bash
# A GPU lease in two calls (sessions 13-16's plan; benchmarks/RESULTS.md, "The next lease"). Run 7 found
# timm's compiled B0 inference slower than timm eager for the third run running, so the B0 verdict divides by a
# row no one trusts; and B0's depthwise kernels, 57% of its fused forward, did not speed up when session 12 cut
# their instructions and registers. Session 14 changed four of the fused training's kernels. The calls, by what
# they can settle:
#     call 1:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh inference [SECONDS]
#              B0's and B4's depthwise layers swept (warmed taps, the banded tensor-core kernel), B0's and B4's
#              small-map 1x1 layers against one cuBLAS product, the inference goal rows of B0 and B4 against timm
#              compiled, alone and with its compiled forward captured in a CUDA graph, then as time allows timm's
#              compiled B0 timed several ways in a fresh process (benchmarks/peer_compile_probe.py) and Nsight
#              Compute on two of B0's depthwise inference layers, all within SECONDS (560 unless given); its
#              kernels compiled before the lease (benchmarks/precompile.py)
#     call 2:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh train [SECONDS]
#              session 14's training kernels: their gradients checked, B0's captured training rows, the profile
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh sweeps [CONFIGS]
#              the fused training kernels' sweeps (CONFIGS tile sets each, 3 unless given), pass by pass, the
#              depthwise gradients through cuDNN beside them (session 15), and Nsight Compute on the two weight
#              gradients; the winners go into the tuning file the later calls take
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh rows [SECONDS]
#              the fused training's gradient checks, B0's training rows, the profiles
#     call 3:  OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh dwforms [SECONDS]
#              (if 200 s are left) session 15's cuDNN forms and session 16's banded forms of the training depthwise
#              passes swept against the Triton kernels on B0's layers, the winners kept, then B0's captured
#              training rows with them
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh b4train [SECONDS]
#              B4's training rows (its goal never measured): eager, captured and compiled, as the budget allows
#     (run 7:  gpu_lease.sh b4: three of B4's 1x1 layers swept, then the fused models checked and the rows)
# (carry [".compile_cache"] with each). A later call on the still-warm machine takes the tuning file the earlier
# ones left in $KEEP (a fresh machine starts from run 7's file). Each call writes a log, its JSON documents and
# the packed compile caches to OUT (at most eight files).
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_lease_out}
KEEP=${KEEP:-/tmp/effnet_lease}
STAGE=${1:-sweeps}
mkdir -p "$OUT" "$KEEP"
[ -f "$KEEP/tuning.json" ] || cp benchmarks/results/2026-11-27_h100_run7_tuning.json "$KEEP/tuning.json"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)

ncu_kernel() {  # KERNEL LABEL SCRIPT ARGS...: one launch of KERNEL in that script, the sections that say why
  [ -n "$NCU" ] || return 0
  local kernel=$1 label=$2
  shift 2
  echo "== Nsight Compute: $kernel ($label)"
  timeout 60 "$NCU" --clock-control none -k "regex:$kernel" -c 1 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    python3 "$@" > "$KEEP/ncu_${kernel}_${label// /_}.txt" 2>&1
  local pattern="Duration|Memory Throughput|DRAM Throughput|L2 Cache Throughput|L1/TEX Hit|L2 Hit|Compute \(SM\)"
  pattern+="|Registers Per|Achieved Occupancy|Theoretical Occ|Block Size|Grid Size|Waves Per SM|Stall"
  pattern+="|Warp Cycles Per Issued"
  grep -E "$pattern" "$KEEP/ncu_${kernel}_${label// /_}.txt" | head -24
}

case "$STAGE" in
  sweeps)
    {
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
      python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
      echo "== bn_pointwise sweep (B0's 1x1 training layers, batch 256)"
      timeout 170 python3 benchmarks/bn_pointwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" \
        --configs "${2:-3}" --no-compile
      echo "== bn_depthwise sweep (B0's depthwise training layers, batch 256)"
      timeout 120 python3 benchmarks/bn_depthwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" \
        --configs "${2:-3}" --no-compile
      ncu_kernel _pw_weight_grad_kernel "16 to 96 at 112 px" benchmarks/bn_pointwise_sweep.py --layers 0 --configs 0 \
        --no-compile
      ncu_kernel _dw_weight_grad_kernel "96 ch 3x3 s2 from 112 px" benchmarks/bn_depthwise_sweep.py --layers 1 \
        --configs 0 --no-compile
      cat "$KEEP"/ncu_*.txt > "$OUT/ncu.txt" 2>/dev/null
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  train)
    # Session 14's fused training kernels on a GPU for the first time (the depthwise weight gradient writes g once
    # and the input gradient reads it, at stride 1 as the flipped-kernel conv through the forward's taps; an
    # expansion's gradients recompute y instead of reading it; every SiLU's sigmoid on the tanh instruction in
    # bf16): their gradients against the plain model's (fp32 within 1e-4; bf16 within twice the plain model's own
    # bf16 error; compiled; with stochastic depth, whose draw session 15's block output makes), then B0's captured
    # training rows (effnet-ftrain, timm, the plain step) and the kernels of an eager step, against run 7's (32.7
    # ms per step of batch 128), and, as the budget allows, effnet-ftrain's and timm's compiled steps captured
    # (session 16: Inductor around the fused operators, no launch cost). About 200 s with the cache.
    {
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 --checks ftrain \
        --tasks training --modes cudagraphs compile-cudagraphs --budget-s "${2:-200}" --profile-training
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
  inference)
    # B0's and B4's depthwise layers swept with the warmed taps (session 13: each tile's input halo loaded first, so
    # that the other taps' loads hit L1) and, at stride 1, the banded kernel (session 16: each kernel row a matrix
    # product on tensor cores), and B0's 1x1 layers on maps of 28 px or less and B4's at 12 px against the conv as
    # one cuBLAS product (session 18, `effnet.fast.blas`: the Triton kernels took 2.5-3.5x cuDNN's time there in runs
    # 3-7), all checked
    # against PyTorch, the winners into the tuning file (a layer's recorded choice timed again beside them).
    # Then the inference goal rows with run 7's tuning file and the sweeps' winners, no checks (run 7 checked
    # these paths; the new variants are checked by the sweeps): B0's and B4's timm compiled, effnet-fast captured
    # and timm's compiled forward captured (mode compile-cudagraphs; the verdicts divide by timm's faster
    # compiled row), and the top kernels of B0's and B4's fused forwards (B4's never profiled: where does run 7's
    # 30.7 ms go?), in what is left of the stage's SECONDS (560 unless given: the call's timeout_s less the
    # caches' packing) less 50 s. Then, each only while its time is left: timm's compiled B0 in a fresh process
    # (runs 5-7: slower than timm eager; runs 1 and 4: 1.4x faster), with and without the Timer's GPU spin, by
    # the host clock, after eager rows, the host's time to launch one call, and captured in a CUDA graph; and
    # Nsight Compute on the depthwise inference kernel in two of B0's layers (the 3x3 at 56 px, the 5x5 at
    # 28 px): run 3 profiled only a stride-2 layer (L2-bound, L1 hit rate 33%).
    LIMIT=${2:-560}
    {
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
      echo "== B0's depthwise layers: the warmed taps and the banded kernel against the default (winners kept)"
      timeout 120 python3 benchmarks/depthwise_sweep.py --configs 1 --warm-configs 1 \
        --banded-configs 2 --tuning "$KEEP/tuning.json" --out "$OUT"
      echo "== B0's 1x1 layers at 28 px or less: one cuBLAS product against the default and the recorded tiles"
      timeout 40 python3 benchmarks/pointwise_sweep.py --configs 0 --stream-configs 0 --tuning "$KEEP/tuning.json" \
        --layers 3 4 6 8 9 10 11 12 13 14 15 16 17
      echo "== B4's 1x1 layers at 12 px: one cuBLAS product against the default and the recorded tiles"
      timeout 30 python3 benchmarks/pointwise_sweep.py --model efficientnet_b4 --size 380 --batch 128 --configs 0 \
        --stream-configs 0 --tuning "$KEEP/tuning.json" --layers 17 18 19 20
      echo "== B4's depthwise layers (batch 128, 380 px): the warmed taps and the banded kernel, default tiles"
      timeout 90 python3 benchmarks/depthwise_sweep.py --model efficientnet_b4 --size 380 --batch 128 --configs 0 \
        --warm-configs 1 --banded-configs 1 --tuning "$KEEP/tuning.json"
      echo "== the inference goal rows ($SECONDS s in)"
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 efficientnet_b4 \
        --no-checks --tasks inference --profile --budget-s $(( LIMIT - SECONDS > 200 ? LIMIT - SECONDS - 50 : 150 ))
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
      if (( SECONDS + 100 < LIMIT )); then
        echo "== timm's compiled B0 inference, timed several ways ($SECONDS s in)"
        timeout $(( LIMIT - SECONDS - 10 )) python3 benchmarks/peer_compile_probe.py --out "$OUT"
      fi
      (( SECONDS + 50 < LIMIT )) && ncu_kernel _depthwise_kernel "144 ch 3x3 s1 56 px" benchmarks/depthwise_sweep.py \
        --layers 2 --configs 0 --warm-configs 0 --banded-configs 0
      (( SECONDS + 50 < LIMIT )) && ncu_kernel _depthwise_kernel "240 ch 5x5 s1 28 px" benchmarks/depthwise_sweep.py \
        --layers 4 --configs 0 --warm-configs 0 --banded-configs 0
      echo "== stage done at $SECONDS s"
      cat "$KEEP"/ncu_*.txt 2>/dev/null  # the whole profiles, last in the log (OUT holds eight files at most)
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  dwforms|dwcudnn)  # (dwcudnn: its name before the banded forms joined it)
    # Session 15's cuDNN forms of the training depthwise passes and session 16's banded tensor-core forms (forward,
    # stride-1 input gradient) against the Triton kernels, B0's layers (the default tiles only), the winners into
    # the tuning file; then effnet-ftrain's captured B0 step with them, beside timm's.
    {
      timeout "${2:-120}" python3 benchmarks/bn_depthwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" \
        --configs 0 --no-compile
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 --no-checks \
        --tasks training --modes cudagraphs --budget-s 70
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  b4train)
    # B4's training goal (>= 1.2x timm compiled), never measured: B4's training rows alone, no checks (the fused
    # training's kernels are checked on B0's layers by the train stage; each row is checked against the plain
    # model's output): timm and effnet-ftrain eager, effnet-stages (memory), effnet-ftrain captured, then timm and
    # effnet-ftrain compiled (about 240 s each, compiling cold) and timm captured, as the budget allows.
    {
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b4 --no-checks \
        --tasks training --budget-s "${2:-400}"
    } 2>&1 | tee "$OUT/lease.log"
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
    echo "gpu_lease.sh: unknown stage '$STAGE' (inference, train, dwforms, sweeps, rows, b4train or b4)" >&2
    exit 2
    ;;
esac
