#!/usr/bin/env bash
# The exact commands behind this folder's curves.csv / curves.json / curves.png (2 CPU cores, about 2 hours).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
# The base: EfficientNet-B0 scaled down by phi = -8 (d = 1.2^-8, w = 1.1^-8), trained at 64 px, where
# width, depth and resolution all have steps close to 2x the base's MACs.
.venv/bin/effnet scale --phi -8 --num-classes 10 --save-spec experiments/fashion_mnist_curves/base_b0_phi-8.json
# Width-, depth-, resolution-only and compound scaling (the paper's alpha, beta, gamma) to 2x the
# base's MACs, each trained the same way: Fashion-MNIST's 60k training images, 5 epochs, RMSProp
# (TF) as in the paper with the learning rate decayed x0.8 every half epoch, seed 0, channels-last;
# evaluated on the 10k test images.
.venv/bin/effnet curves --base experiments/fashion_mnist_curves/base_b0_phi-8.json \
  --data fashion-mnist --image-size 64 --multiples 2 --epochs 5 --parallel 2 \
  --train-arg=--workers=0 --train-arg=--channels-last --train-arg=--warmup-epochs=0.5 \
  --train-arg=--decay-epochs=0.5 --train-arg=--decay-rate=0.8 --output runs/fashion_mnist_curves_64px
cp runs/fashion_mnist_curves_64px/curves.{csv,json,png} experiments/fashion_mnist_curves/
# A second seed for base, compound, width and depth: how far runs differ by seed alone.
SAME="--data fashion-mnist --epochs 5 --seed 1 --workers 0 --channels-last --warmup-epochs 0.5 --decay-epochs 0.5 --decay-rate 0.8 --json"
RUNS=runs/fashion_mnist_curves_64px
.venv/bin/effnet train --spec $RUNS/runs/base_x1/spec.json --image-size 64 $SAME --output $RUNS/seed1/base_x1 &
.venv/bin/effnet train --spec $RUNS/runs/compound_x2/spec.json --image-size 72 $SAME --output $RUNS/seed1/compound_x2 &
wait
.venv/bin/effnet train --spec $RUNS/runs/width_x2/spec.json --image-size 64 $SAME --output $RUNS/seed1/width_x2 &
.venv/bin/effnet train --spec $RUNS/runs/depth_x2/spec.json --image-size 64 $SAME --output $RUNS/seed1/depth_x2 &
wait
# Every run's per-epoch top-1 and EMA top-1.
mkdir -p experiments/fashion_mnist_curves/metrics
for run in $RUNS/runs/* $RUNS/seed1/*; do
  seed=$([[ $run == */seed1/* ]] && echo seed1 || echo seed0)
  cp "$run/metrics.csv" "experiments/fashion_mnist_curves/metrics/${seed}_$(basename "$run").csv"
done
