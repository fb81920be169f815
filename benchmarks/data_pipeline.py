"""Data-pipeline throughput: JPEG decode + train transform + DataLoader, in images/s per worker.

Generates JPEGs (500x375 by default, ImageNet's typical size) into a temporary folder, builds
effnet's ImageFolderDataset with the train transform of a model's data config, and times full
passes of `make_loader` for each worker count. The first pass starts the (persistent) workers
and warms caches; it is not timed.

    python benchmarks/data_pipeline.py [--images 256] [--workers 0 1 2] [--size 224] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from effnet.data import ImageFolderDataset, make_loader, make_train_transform
from effnet.spec.data import default_data_config

CLASS_COUNT = 4


def write_jpegs(folder: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    """Photo-like JPEGs: a smooth gradient plus noise, so they compress like real images, not flat fills."""
    generator = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    for index in range(count):
        class_dir = folder / f"class{index % CLASS_COUNT}"
        class_dir.mkdir(parents=True, exist_ok=True)
        base = np.stack([(rows * (index + 1)) % 256, (columns * 2) % 256, (rows + columns) % 256], axis=-1)
        noise = generator.integers(-24, 24, size=(height, width, 3))
        pixels = (base + noise).clip(0, 255).astype(np.uint8)  # (H, W, 3)
        Image.fromarray(pixels).save(class_dir / f"{index:05d}.jpg", quality=90)


def time_workers(dataset: ImageFolderDataset, workers: int, batch_size: int, passes: int) -> dict[str, float]:
    loader = make_loader(dataset, batch_size, shuffle=True, workers=workers, seed=0, pin_memory=False)
    for _ in loader:  # warm-up pass: starts workers
        pass
    start = time.perf_counter()
    images = 0
    for _ in range(passes):
        for batch, _ in loader:
            images += len(batch)
    seconds = time.perf_counter() - start
    del loader  # ends the persistent workers before the next count starts its own
    per_second = images / seconds
    return {"workers": workers, "images": images, "seconds": round(seconds, 3),
            "images_per_second": round(per_second, 1),
            "images_per_second_per_worker": round(per_second / max(workers, 1), 1)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs to generate (default 256)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--size", type=int, default=224, help="model input resolution (default 224)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the images (default 2)")
    parser.add_argument("--auto-augment", default=None, help="AutoAugment policy, e.g. imagenet")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one core per loader process: the numbers are per worker
    transform = make_train_transform(default_data_config(args.size), auto_augment=args.auto_augment)
    with tempfile.TemporaryDirectory(prefix="effnet-bench-") as folder:
        write_jpegs(Path(folder), args.images, args.width, args.height)
        dataset = ImageFolderDataset(folder, transform=transform)
        rows = [time_workers(dataset, workers, args.batch_size, args.passes) for workers in args.workers]
    result = {
        "benchmark": "data_pipeline", "image_width": args.width, "image_height": args.height,
        "input_size": args.size, "batch_size": args.batch_size, "auto_augment": args.auto_augment,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "results": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.images} JPEGs {args.width}x{args.height} -> {args.size}x{args.size}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'workers':>7}  {'images/s':>9}  {'images/s per worker':>19}")
    for row in rows:
        print(f"{row['workers']:>7}  {row['images_per_second']:>9.1f}  {row['images_per_second_per_worker']:>19.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
