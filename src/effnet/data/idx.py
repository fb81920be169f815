"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

torchvision's reader only opens uncompressed files under `<root>/FashionMNIST/raw/`; Debian's
`dataset-fashion-mnist` and the original release ship `.gz` files, so effnet reads both itself.
Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the data in C order.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from effnet.data.errors import DataError

IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
HEADER_SIZE = 4


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (`.gz` decompressed on the fly); raise DataError if it is malformed."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from None
    if len(raw) < HEADER_SIZE or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    dtype, dimensions = IDX_TYPES[raw[2]], raw[3]
    shape_end = HEADER_SIZE + 4 * dimensions
    if dimensions == 0 or len(raw) < shape_end:
        raise DataError(f"{path} is not an IDX file (truncated header)")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=dimensions, offset=HEADER_SIZE))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - shape_end != expected:
        raise DataError(f"{path} is truncated or padded: header says {shape} ({expected} bytes of data), "
                        f"file has {len(raw) - shape_end}")
    data = np.frombuffer(raw, dtype=dtype, offset=shape_end).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy
