#!/usr/bin/env bash
# The exact commands behind this folder's curves.csv / curves.json / curves.png (2 CPU cores, ~90 min).
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
