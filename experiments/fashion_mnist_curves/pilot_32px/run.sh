#!/usr/bin/env bash
# The exact commands behind this folder's curves.csv / curves.json / curves.png (2 CPU cores, ~75 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
# The base: EfficientNet-B0 scaled down by phi = -4 (d = 1.2^-4, w = 1.1^-4), trained at 32 px.
.venv/bin/effnet scale --phi -4 --num-classes 10 --save-spec experiments/fashion_mnist_curves/pilot_32px/base_b0_phi-4.json
# Width-, depth-, resolution-only and compound scaling to 2x the base's MACs, each trained the same way
# (Fashion-MNIST's 60k training images, 2 epochs, paper recipe with Fashion-MNIST defaults, seed 0),
# evaluated on its 10k test images.
.venv/bin/effnet curves --base experiments/fashion_mnist_curves/pilot_32px/base_b0_phi-4.json \
  --data fashion-mnist --image-size 32 --multiples 2 --epochs 2 --parallel 2 \
  --train-arg=--workers=0 --train-arg=--warmup-epochs=0.3 --output runs/fashion_mnist_curves
cp runs/fashion_mnist_curves/curves.{csv,json,png} experiments/fashion_mnist_curves/pilot_32px/
