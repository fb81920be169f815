"""Carry the compilers' caches from one GPU lease to the next, so that a lease spends its minutes timing.

Run 5 spent about half of its first call compiling: Triton kernels for the sweeps and the checks,
Inductor's graphs for the compiled rows (30-90 s each at B0, about 4 minutes for a compiled B4 training
step). Both compilers keep a disk cache keyed by what they compiled, the compiler versions and the
GPU: the lease scripts point TRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR under one folder, and this
script packs that folder into the call's OUT and unpacks it at the start of the next call.

    python3 benchmarks/compile_cache.py unpack .compile_cache /tmp/effnet_cache    # parts -> folder
    python3 benchmarks/compile_cache.py pack /tmp/effnet_cache $OUT                # folder -> parts

A pack is one gzip-compressed tar, split into parts of at most PART_BYTES (the device tool returns
files of up to 16 MiB, eight in all). Triton's kernels go in first, then Inductor's graphs, the newest
first within each, each folder whole (a Triton kernel's binary and the metadata naming it), until
MAX_PARTS parts are full. Triton's come first because they are what a lease would otherwise compile
kernel by kernel, and most of them were compiled before it (`precompile.py`): their files keep that
earlier time, so by age alone run 8's packs kept what each call compiled and left out all but 4 of the
604 precompiled kernels. An entry left out is compiled again next time, as it would be without this
script.
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile
import zlib
from pathlib import Path

PART_BYTES = 15 * 2**20
MAX_PARTS = 3
PREFIX = "compile_cache.part"
MARGIN = 2 * 2**20  # compressed bytes the compressor may still hold back when the budget is checked


class _Parts(io.RawIOBase):
    """A write-only stream that gzip-compresses into numbered files of at most `part_bytes` each."""

    def __init__(self, out: Path, part_bytes: int) -> None:
        self.out, self.part_bytes = out, part_bytes
        self.compressor = zlib.compressobj(4, zlib.DEFLATED, 31)  # 31: gzip framing
        self.written, self.paths, self.part = 0, [], None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._emit(self.compressor.compress(bytes(data)))
        return len(data)

    def finish(self) -> list[Path]:
        self._emit(self.compressor.flush())
        if self.part is not None:
            self.part.close()
        return self.paths

    def _emit(self, data: bytes) -> None:
        while data:
            if self.written % self.part_bytes == 0:  # the current part is full (or there is none yet)
                if self.part is not None:
                    self.part.close()
                self.paths.append(self.out / f"{PREFIX}{len(self.paths):02d}")
                self.part = open(self.paths[-1], "wb")
            chunk = data[:self.part_bytes - self.written % self.part_bytes]
            self.part.write(chunk)
            self.written += len(chunk)
            data = data[len(chunk):]


def entries(root: Path) -> list[list[Path]]:
    """The cache's units, Triton's folders first, then the rest, the newest first within each: the files of each
    folder together (a Triton kernel's folder holds its binary and the metadata that names it; one is no use
    without the other)."""
    folders: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            folders.setdefault(path.parent, []).append(path)

    def order(files: list[Path]) -> tuple[bool, float]:
        return files[0].relative_to(root).parts[0] != "triton", -max(f.stat().st_mtime for f in files)

    return sorted(folders.values(), key=order)


def pack(root: Path, out: Path, part_bytes: int = PART_BYTES, max_parts: int = MAX_PARTS) -> tuple[int, int]:
    """Write `root`'s cache to out/compile_cache.partNN; returns (folders packed, folders left out)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{PREFIX}*"):
        old.unlink()
    units = entries(root) if root.is_dir() else []
    sink = _Parts(out, part_bytes)
    packed = 0
    with tarfile.open(fileobj=sink, mode="w|") as tar:
        for unit in units:
            if sink.written + MARGIN > part_bytes * max_parts:
                break
            for path in unit:
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
            packed += 1
    sink.finish()
    return packed, len(units) - packed


class _Joined(io.RawIOBase):
    """The parts read back to back as one raw (still compressed) stream, a part at a time."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.file = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while self.paths or self.file is not None:
            if self.file is None:
                self.file = open(self.paths.pop(0), "rb")
            size = self.file.readinto(target)
            if size:
                return size
            self.file.close()
            self.file = None
        return 0


def unpack(parts: Path, root: Path) -> int:
    """Restore the cache packed in parts/compile_cache.partNN under `root`; returns how many files (0 if none)."""
    paths = sorted(parts.glob(f"{PREFIX}*")) if parts.is_dir() else []
    if not paths:
        return 0
    root.mkdir(parents=True, exist_ok=True)
    count = 0
    # tarfile decompresses as it reads, a block at a time (session 10's lease lost its second call to a
    # reader that sliced whole decompressed parts: quadratic in a part's size, minutes for 45 MiB)
    with tarfile.open(fileobj=io.BufferedReader(_Joined(paths), 2**20), mode="r|gz") as tar:
        for member in tar:
            if not member.isfile() or member.name.startswith(("/", "..")) or "/../" in member.name:
                continue  # only plain files inside root
            tar.extract(member, root, filter="data")
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path, help="pack: the cache folder; unpack: the folder of parts")
    parser.add_argument("target", type=Path, help="pack: where the parts go; unpack: the cache folder")
    args = parser.parse_args()
    if args.action == "pack":
        packed, left = pack(args.source, args.target)
        parts = sorted(args.target.glob(f"{PREFIX}*"))
        print(f"compile cache: {packed} folders packed in {len(parts)} parts "
              f"({sum(p.stat().st_size for p in parts) / 2**20:.1f} MiB), {left} left out")
    else:
        print(f"compile cache: {unpack(args.source, args.target)} files restored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
