#!/usr/bin/env bash
# A GPU lease in calls on one warm machine (benchmarks/RESULTS.md, "The next lease"). Run 9 (an H200) met both
# inference goals there (B0 1.73x, B4 1.54x timm compiled and captured) with its sweeps' winners: the sliding
# depthwise window, cuDNN's depthwise conv, the stem on tensor cores, the split excitation. Its pwtrain sweep took
# B0's captured fused training step from 6,073 to 7,551 img/s, about level with timm compiled (run 8: 7,559); the
# eager fused loop is bound by its host (the loop stage). On an H100, the goals' card, call 1 is the inference
# stage; on an H200, the training stages first. The stages, by what they settle:
#     inference: OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh inference [SECONDS]
#              B0's and B4's depthwise layers swept (the new default tiles against the old one-row tiles, the warmed
#              taps, cuDNN's conv with one activation pass, the sliding window (session 22), on B4 the
#              banded kernel), B0's and B4's small-map 1x1
#              layers against one cuBLAS product, their stems against the stem's tensor-core form and their SEs
#              against the split excitation, then the inference goal rows of B0 and B4 against timm
#              compiled, alone and captured in a CUDA graph, and the top kernels of both fused forwards, all within
#              SECONDS (560 unless given); its kernels compiled before the lease (benchmarks/precompile.py)
#     pwtrain: OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh pwtrain [SECONDS]
#              the fused training's 1x1 passes swept on B0's layers (tiles, the weight gradient's split, each
#              layer as library products), the winners kept (SECONDS for the sweep, 170 unless given), then
#              the fused training's gradient checks and B0's captured training rows with them
#     then:    OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh b4train [SECONDS] [SWEEP]
#              B4's projections swept with the library form (SWEEP seconds, 90 unless given), then B4's training
#              rows: eager, captured and, given 500 s, compiled (timm's compiled B4 step never timed); session
#              29's defaults (cuDNN's depthwise weight gradients, the library form for large-map expansions) first
#              run there, as no file names B4's layers
#     then:    OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh dwforms [SECONDS]
#              the training depthwise passes' cuDNN, banded and sliding forms (the sliding ones new in session 22:
#              run it on any card) against the Triton kernels on B0's layers, the winners kept, then B0's captured
#              training rows with them (run 8: 5,207 -> 6,073 img/s)
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh train [SECONDS]
#              the fused training's gradient checks, B0's captured and compiled training rows, the eager step's
#              kernels (run 8: checks 5/5)
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh sweeps [CONFIGS]
#              the fused training kernels' sweeps (CONFIGS tile sets each, 3 unless given), pass by pass, and Nsight
#              Compute on the two weight gradients; the winners go into the tuning file the later calls take
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh loop
#              `effnet train --cuda-graphs`'s GPU tests, then `effnet train`'s loop reading its loss each step
#              against every 10 steps (session 26) and replaying each step from a CUDA graph (session 29), B0 plain
#              and fused, and the RMSpropTF step against timm's: about 130 s
#     later:   OUT=$OUT bash benchmarks/with_compile_cache.sh bash benchmarks/gpu_lease.sh rows [SECONDS]
#              the CUDA-graph tests, the fused training's gradient checks, B0's training rows and the profiles
#     (run 7:  gpu_lease.sh b4: three of B4's 1x1 layers swept, then the fused models checked and the rows)
# (carry [".compile_cache"] with each). A later call on the still-warm machine takes the tuning file the earlier
# ones left in $KEEP; a fresh machine starts from the last file measured on its card (START_TUNING: run 9's on an
# H200, run 7's on an H100, which precompile.py compiles both). Each call writes a log, its JSON documents and the
# packed compile caches to OUT (at most eight files).
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_lease_out}
KEEP=${KEEP:-/tmp/effnet_lease}
STAGE=${1:-sweeps}
mkdir -p "$OUT" "$KEEP"
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$CARD" in  # START_TUNING: the last tuning file measured on this card (precompile.py's START_TUNING)
  *H200*) START_TUNING=src/effnet/fast/tuned/NVIDIA_H200.json ;;  # run 9 file, shipped with effnet
  *) START_TUNING=benchmarks/results/2026-11-27_h100_run7_tuning.json ;;
esac
[ -f "$KEEP/tuning.json" ] || cp "$START_TUNING" "$KEEP/tuning.json"
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
    # B0's and B4's depthwise layers swept: the default tiles (8 x 8 pixels x 32 channels for every kernel size
    # since run 8) against the one-row tiles that were the 5 x 5 default until then (on an H100 the 5 x 5 layers
    # were last swept in run 5, before the float32 taps), the warmed taps at stride 1, cuDNN's conv with one pass
    # for the SiLU and the pool (`effnet.fast.depthwise_cudnn`; run 8: PyTorch's three passes beat the fused kernel
    # on B4's 5 x 5 stride-1 layers), the sliding window (session 22: each input row loaded k times, not k²; four
    # tile sets on every layer) and, on B4, the banded kernel (run 8's winner over the old default on three
    # of its layers; 1.3-5.8x slower than the default on 11 of B0's 12). Then B0's 1x1 layers on maps of 28 px or
    # less and B4's at 12 px against the conv as one cuBLAS product (run 8: never faster), B0's and B4's stems
    # against their tensor-core form (session 21; run 8: the direct kernel 4-9x its floor) and their SEs' one-launch
    # kernel against the split form (session 21; run 8: 8-16 programs, 4% of each forward). All checked against
    # PyTorch, the winners into the tuning file (a layer's recorded choice timed again beside them). Then the
    # inference goal rows, no checks (the sweeps check the variants; run 7 the models): B0's and B4's timm compiled,
    # effnet-fast captured and timm's compiled forward captured (mode compile-cudagraphs; the verdicts divide by
    # timm's faster compiled row), and the top kernels of B0's and B4's fused forwards, in what is left of the
    # stage's SECONDS (560 unless given: the call's timeout_s less the caches' packing) less 50 s.
    LIMIT=${2:-560}
    {
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
      echo "== B0's depthwise layers: default and one-row tiles, warmed taps, cuDNN, sliding (winners kept)"
      timeout 120 python3 benchmarks/depthwise_sweep.py --configs 2 --warm-configs 1 \
        --banded-configs 0 --tuning "$KEEP/tuning.json" --out "$OUT"
      echo "== B0's 1x1 layers at 28 px or less: one cuBLAS product against the default and the recorded tiles"
      timeout 40 python3 benchmarks/pointwise_sweep.py --configs 0 --stream-configs 0 --tuning "$KEEP/tuning.json" \
        --layers 3 4 6 8 9 10 11 12 13 14 15 16 17
      echo "== B4's 1x1 layers at 12 px: one cuBLAS product against the default and the recorded tiles"
      timeout 30 python3 benchmarks/pointwise_sweep.py --model efficientnet_b4 --size 380 --batch 128 --configs 0 \
        --stream-configs 0 --tuning "$KEEP/tuning.json" --layers 17 18 19 20
      echo "== B4's depthwise layers (batch 128, 380 px): the default and one-row tiles, warmed, banded, cuDNN, sliding"
      timeout 120 python3 benchmarks/depthwise_sweep.py --model efficientnet_b4 --size 380 --batch 128 --configs 2 \
        --warm-configs 1 --banded-configs 1 --tuning "$KEEP/tuning.json"
      echo "== B0's and B4's stems: the direct kernel against the tensor-core form (winners kept)"
      timeout 30 python3 benchmarks/stem_sweep.py --tuning "$KEEP/tuning.json" --out "$OUT"
      timeout 30 python3 benchmarks/stem_sweep.py --model efficientnet_b4 --size 380 --batch 128 \
        --tuning "$KEEP/tuning.json"
      echo "== B0's and B4's squeeze-excitations: one launch against the split form (winners kept)"
      timeout 30 python3 benchmarks/excitation_sweep.py --tuning "$KEEP/tuning.json"
      timeout 30 python3 benchmarks/excitation_sweep.py --model efficientnet_b4 --batch 128 --tuning "$KEEP/tuning.json"
      echo "== the inference goal rows ($SECONDS s in)"
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 efficientnet_b4 \
        --no-checks --tasks inference --profile --budget-s $(( LIMIT - SECONDS > 200 ? LIMIT - SECONDS - 50 : 150 ))
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
      echo "== stage done at $SECONDS s"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  pwtrain)
    # The fused training's 1x1 passes, B0's training goal's largest gap: in run 8's eager profiles (batch 128) they
    # took 10.7 ms a step where the plain step's cuDNN 1x1 convs took 4.3. Run 9 swept the first three tile sets:
    # 12.87 -> 9.32 ms a step (the projections' input gradients 2.4x faster on the best), B0's captured step 6,073
    # -> 7,551 img/s. B0's bn_pointwise sweep: the default tiles, all six tile sets (four never timed), the weight
    # gradient split for fewer programs ("waves") and each layer's passes as library products ("blas": session 24's
    # for the expansions, session 28's for the projections), the winners kept; then the fused training's gradient
    # checks with those winners and B0's captured training rows with the eager step's kernels. About 300 s.
    {
      timeout "${2:-170}" python3 benchmarks/bn_pointwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" \
        --configs 6 --no-compile
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 --checks ftrain \
        --tasks training --modes cudagraphs --budget-s 110 --profile-training
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  dwforms|dwcudnn)  # (dwcudnn: its name before the banded forms joined it)
    # Session 15's cuDNN forms of the training depthwise passes, session 16's banded tensor-core forms and session
    # 22's sliding window (forward; input gradient at stride 1) against the Triton kernels, B0's layers (the default
    # tiles only), then B4's five most repeated stride-1 layers at the training rows' batch (B4's training step has
    # never had forms of its own), the winners into the tuning file; then effnet-ftrain's captured B0 step with
    # them, beside timm's.
    {
      timeout "${2:-120}" python3 benchmarks/bn_depthwise_sweep.py --out "$OUT" --tuning "$KEEP/tuning.json" \
        --configs 0 --no-compile
      timeout 80 python3 benchmarks/bn_depthwise_sweep.py --model efficientnet_b4 --size 380 --batch 64 \
        --tuning "$KEEP/tuning.json" --configs 0 --no-compile --layers 3 6 7 9 12
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b0 --no-checks \
        --tasks training --modes cudagraphs --budget-s 70
      cp "$KEEP/tuning.json" "$OUT/tuning.json"
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  b4train)
    # B4's training goal (>= 1.2x timm compiled), never measured: first B4's 14 projection shapes swept at the rows'
    # batch, the default tiles against session 11's and the library form (session 28), the winners kept (SWEEP
    # seconds, the third argument, 90 unless given; B4's 1x1 layers have no tuning entries of their own), then B4's
    # training rows alone, no checks (the fused training's kernels are checked on B0's layers by the train stage;
    # each row is checked against the plain model's output): timm and effnet-ftrain eager, effnet-stages (memory),
    # effnet-ftrain captured, then timm and effnet-ftrain compiled (about 240 s each, compiling cold) and timm
    # captured, as the budget allows; then the kernels of B4's eager training steps (plain, effnet-ftrain,
    # effnet-tdw; never profiled before), about 10 s.
    {
      timeout "${3:-90}" python3 benchmarks/bn_pointwise_sweep.py --model efficientnet_b4 --size 380 --batch 64 \
        --configs 0 --wave-configs 0 --role project --no-compile --out "$OUT" --tuning "$KEEP/tuning.json"
      python3 benchmarks/gpu_check.py --out "$OUT" --tuning "$KEEP/tuning.json" --only efficientnet_b4 --no-checks \
        --tasks training --budget-s "${2:-400}" --profile-training
    } 2>&1 | tee "$OUT/lease.log"
    ;;
  loop)
    # Session 26: `effnet train`'s loop read its loss back three times a step, so the host could not queue a step
    # while the GPU ran the one before; it now reads every --log-every steps. B0 at batch 128, bf16, the plain
    # blocks and the fused ones (with the tuning file), a read each step against one every 10, then the paper's
    # optimizer's step against timm's: about 70 s. Run 9: 1.07x plain, 1.05x fused, but the fused loop ran at 1,474
    # img/s against the plain one's 3,423, bound by its host (18 ms of kernels a step of 87): its pass now ends
    # with a profile of the host's time (cProfile, the backward on the main thread). Session 29: `effnet train
    # --cuda-graphs` replays each step from a CUDA graph; its GPU tests first (captured runs against eager ones, the
    # fused blocks' at 16 px precompiled), then each loop also timed captured.
    {
      timeout 150 python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_train_graphed.py 2>&1 | tail -4
      timeout 120 python3 benchmarks/train_loop.py --json "$OUT/train_loop.json" --cuda-graphs
      EFFNET_TUNING="$KEEP/tuning.json" timeout 160 python3 benchmarks/train_loop.py --fused --cuda-graphs \
        --json "$OUT/train_loop_fused.json" --host-profile 30
      # the paper's optimizer's step, in multi-tensor operations since session 26, against timm's
      timeout 60 python3 benchmarks/optimizer_step.py
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
    echo "gpu_lease.sh: unknown stage '$STAGE' (inference, pwtrain, train, dwforms, sweeps, rows, b4train, loop" \
      "or b4)" >&2
    exit 2
    ;;
esac
