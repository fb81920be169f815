"""Writes examples/digits/: a small ImageFolder tree of real digits (from scikit-learn's copy of
the UCI handwritten digits) plus one broken file, used by the README's data, train and predict
examples. Run from the repository root: `python examples/make_digits_folder.py`."""
from pathlib import Path

from PIL import Image

from effnet.data.digits import digits_images

PER_CLASS = 6
root = Path(__file__).parent / "digits"
images, targets = digits_images()  # (N, 8, 8) uint8, (N,)
counts = {digit: 0 for digit in range(10)}
for index, (image, target) in enumerate(zip(images, targets)):
    target = int(target)
    if counts[target] == PER_CLASS:
        continue
    folder = root / str(target)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).resize((32, 32), Image.Resampling.BICUBIC).save(folder / f"{index:04d}.png")
    counts[target] += 1
(root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated on purpose")
