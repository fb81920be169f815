#!/usr/bin/env bash
# One GPU call for the kernel data (about 10 minutes): the depthwise and 1x1 sweeps of B0 (bf16, batch 256;
# with the warmed, banded and streaming variants), the training depthwise's gradient sweep, the fused training
# kernels' sweeps (bn_pointwise, bn_depthwise; batch 128), each writing its per-layer winners to
# OUT/tuning.json, and Nsight Compute's view of the default depthwise kernel on B0's largest depthwise layer. (benchmarks/gpu_lease.sh is the short version followed by gpu_check.)
#     OUT=results/ bash benchmarks/gpu_sweeps.sh
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_sweeps_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
  timeout 60 "$NCU" --clock-control none -k regex:_depthwise_kernel -c 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis python3 benchmarks/depthwise_sweep.py --layers 1 --configs 0 \
    > "$OUT/ncu_depthwise.txt" 2>&1
  grep -E "Throughput|Duration|Occupancy|Registers|Block Size|Grid Size|Stall|Warp Cycles|L1/TEX Hit|L2 Hit" \
    "$OUT/ncu_depthwise.txt" | head -40
fi
timeout 200 python3 benchmarks/depthwise_sweep.py --out "$OUT" --tuning "$OUT/tuning.json" 2>&1 | tee "$OUT/depthwise_sweep.log"
timeout 240 python3 benchmarks/pointwise_sweep.py --out "$OUT" --tuning "$OUT/tuning.json" 2>&1 | tee "$OUT/pointwise_sweep.log"
timeout 200 python3 benchmarks/depthwise_train_sweep.py --out "$OUT" --tuning "$OUT/tuning.json" 2>&1 | tee "$OUT/depthwise_train_sweep.log"
timeout 200 python3 benchmarks/bn_pointwise_sweep.py --out "$OUT" --tuning "$OUT/tuning.json" 2>&1 | tee "$OUT/bn_pointwise_sweep.log"
timeout 200 python3 benchmarks/bn_depthwise_sweep.py --out "$OUT" --tuning "$OUT/tuning.json" 2>&1 | tee "$OUT/bn_depthwise_sweep.log"
