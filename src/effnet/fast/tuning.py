"""Kernel choices measured per layer shape on a GPU: a tuning file that `ops` consults before its defaults.

The defaults in `kernels` are one tile shape per kind of layer. The sweeps
(`benchmarks/depthwise_sweep.py`, `pointwise_sweep.py`, `depthwise_train_sweep.py`) time every
kernel variant on every layer shape of a model and, with `--tuning FILE`, write the fastest one per
shape when it beats the default. `EFFNET_TUNING=FILE` in the environment, or `use(FILE)`, makes
the fast paths take those choices: the same function, other tiles or another kernel of this package.
A shape the file does not name keeps the default. Without either, on a GPU this package ships a file for
(`tuned/`, named by `torch.cuda.get_device_name`, as `shipped_file` says), the fast paths take that card's
file: the choices its goal rows were measured with. `EFFNET_TUNING=none`, or `use(None)`, keeps the defaults.
Each entry names the GPU it was measured on (its `device`; entries without one, the file's `device`, the GPU
of its first entry); on another GPU the defaults are the safer start, and taking a file with entries measured
elsewhere warns (a shipped file does not: it was timed as a whole on its card).

The file is JSON: `{"format": 1, "device": ..., "entries": [{"op": ..., "key": {...}, "kernel": ...,
"tiles": [...], "seconds": ..., "default_seconds": ..., "device": ...}, ...]}`. Ops and their keys:

- `depthwise` (inference) and `depthwise_input_grad` / `depthwise_weight_grad` (training):
  `kernel_size`, `stride`, `channels`, `height`, `width` of the conv's input. Kernels `tiled`
  (`kernels.depthwise`'s tiles; a sixth value of 1, stride 1 only, warms L1 with each tile's input halo first);
  for `depthwise` also `banded`
  (`banded.banded_depthwise`'s (BLOCK_W, BLOCK_R, BLOCK_C, num_warps): the conv on tensor cores, any stride)
  and `cudnn` (`effnet.fast.depthwise_cudnn`, no tiles: cuDNN's conv, then one pass for the SiLU and the pool)
  and `sliding` (`effnet.fast.depthwise_sliding`'s (BLOCK_W, BLOCK_C, ROWS, num_warps[, prefetch]): a window
  sliding down the rows, kernels up to 5 x 5 only).
- `pointwise`: `in_channels`, `out_channels`, `height`, `width`, `gated`, `residual`. Kernels
  `tiled` (`kernels.pointwise`'s tiles, with `gate_weights`), `streaming` (gated: in row tiles of at most
  one image's pixels) or `cublas` (`effnet.fast.blas`, no tiles: an empty list).
- `bn_pointwise` / `bn_pointwise_input_grad` / `bn_pointwise_weight_grad` (training,
  `effnet.fast.bn_pointwise`, one op per pass): `in_channels`, `out_channels`, `height`, `width`,
  `normalized` (the input's batch norm, SiLU and gate applied as it loads). Kernels `tiled` (the weight
  gradient's tiles may add a sixth value, the programs per multiprocessor its split over the rows aims for) and
  `blas` (no tiles: the library's matrix products; where `normalized` is false (an expansion),
  `effnet.fast.bn_pointwise_blas`, the statistics and gradients from x's moments; where it is true (a
  projection), `effnet.fast.projection_blas`, the activation and its gradient written out).
- `stem` (inference, `effnet.fast.stem`): `in_channels`, `out_channels`, `kernel_size`, `stride`, `height`,
  `width` of the network's input. Kernels `direct` (the default kernel, no tiles) and `dot` (the conv as one
  product on tensor cores: (BLOCK_P, num_warps), or no tiles for its defaults).
- `excitation` (the SE gate, `effnet.fast.excitation`): `batch`, `channels`, `reduced`. Kernels `single` (the
  default, no tiles) and `split` (two launches over chunks of channels: (CHUNK,), or no tiles for its default).
- `bn_depthwise` / `bn_depthwise_input_grad` / `bn_depthwise_weight_grad` (training,
  `effnet.fast.bn_depthwise`): keyed as `depthwise`. Kernels `tiled`, `cudnn`
  (`effnet.fast.bn_depthwise_cudnn`, no tiles: an empty list), `banded` (`effnet.fast.bn_depthwise_banded`,
  no tiles; the weight gradient 3x3 and 5x5 only) and, for the forward and the input gradient, `sliding`
  (`effnet.fast.bn_depthwise_sliding`: no tiles for the defaults, or the inference kernel's; kernels up to 5x5,
  the input gradient at stride 1 only).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError, EffnetWarning

ENV = "EFFNET_TUNING"
SHIPPED = Path(__file__).with_name("tuned")  # the files measured on each card (`shipped_file`)
FORMAT = 1
KEYS = {
    "depthwise": ("kernel_size", "stride", "channels", "height", "width"),
    "depthwise_input_grad": ("kernel_size", "stride", "channels", "height", "width"),
    "depthwise_weight_grad": ("kernel_size", "stride", "channels", "height", "width"),
    "pointwise": ("in_channels", "out_channels", "height", "width", "gated", "residual"),
    "stem": ("in_channels", "out_channels", "kernel_size", "stride", "height", "width"),
    "excitation": ("batch", "channels", "reduced"),
    "bn_pointwise": ("in_channels", "out_channels", "height", "width", "normalized"),
    "bn_pointwise_input_grad": ("in_channels", "out_channels", "height", "width", "normalized"),
    "bn_pointwise_weight_grad": ("in_channels", "out_channels", "height", "width", "normalized"),
    "bn_depthwise": ("kernel_size", "stride", "channels", "height", "width"),
    "bn_depthwise_input_grad": ("kernel_size", "stride", "channels", "height", "width"),
    "bn_depthwise_weight_grad": ("kernel_size", "stride", "channels", "height", "width"),
}
_CUDNN_OPS = ("bn_depthwise", "bn_depthwise_input_grad", "bn_depthwise_weight_grad")  # `bn_depthwise_cudnn`
_SLIDING_OPS = ("bn_depthwise", "bn_depthwise_input_grad")  # `bn_depthwise_sliding`
_BLAS_OPS = ("bn_pointwise", "bn_pointwise_input_grad", "bn_pointwise_weight_grad")  # `bn_pointwise_blas`
KERNELS = {"depthwise": ("tiled", "banded", "cudnn", "sliding"),
           "pointwise": ("tiled", "streaming", "cublas"),
           "stem": ("direct", "dot"), "excitation": ("single", "split"),
           # and `bn_depthwise_banded`
           **{op: ("tiled", "cudnn", "banded", *(("sliding",) if op in _SLIDING_OPS else ())) for op in _CUDNN_OPS},
           **{op: ("tiled", "blas") for op in _BLAS_OPS},
           **{op: ("tiled",) for op in KEYS if op not in ("depthwise", "pointwise", "stem", "excitation",
                                                           *_CUDNN_OPS, *_BLAS_OPS)}}
# How many tile values each (op, kernel) takes: the `tiles` argument of the function that runs it.
TILE_LENGTHS = {("depthwise", "tiled"): (5, 6), ("depthwise", "banded"): (4,), ("depthwise", "cudnn"): (0,),
                ("depthwise", "sliding"): (4, 5), ("pointwise", "tiled"): (5,),
                ("pointwise", "streaming"): (5,), ("pointwise", "cublas"): (0,), ("stem", "direct"): (0,),
                ("stem", "dot"): (0, 2), ("excitation", "single"): (0,), ("excitation", "split"): (0, 1),
                ("depthwise_input_grad", "tiled"): (4, 5),
                ("depthwise_weight_grad", "tiled"): (5, 6), ("bn_pointwise", "tiled"): (5,),
                ("bn_pointwise_input_grad", "tiled"): (5,), ("bn_pointwise_weight_grad", "tiled"): (5, 6),
                ("bn_depthwise", "tiled"): (4, 5), ("bn_depthwise_input_grad", "tiled"): (4, 5),
                ("bn_depthwise_weight_grad", "tiled"): (5,), ("bn_depthwise", "cudnn"): (0,),
                ("bn_depthwise_input_grad", "cudnn"): (0,), ("bn_depthwise_weight_grad", "cudnn"): (0,),
                **{(op, "banded"): (0,) for op in _CUDNN_OPS}, **{(op, "sliding"): (0, 4, 5) for op in _SLIDING_OPS},
                **{(op, "blas"): (0,) for op in _BLAS_OPS}}


class TuningError(EffnetError, ValueError):
    """A tuning file that cannot be read or does not describe kernel choices; the message names it."""


Table = dict[tuple, dict[str, Any]]
_active: Table | None = None
_active_source: str | None = None


def _key(op: str, fields: dict[str, Any]) -> tuple:
    if op not in KEYS:
        raise TuningError(f"unknown op {op!r} in a tuning entry (known: {', '.join(KEYS)})")
    missing = [name for name in KEYS[op] if name not in fields]
    if missing:
        raise TuningError(f"a {op} tuning entry lacks {', '.join(missing)}")
    return (op, *(fields[name] for name in KEYS[op]))


def load(path: str | Path) -> Table:
    """The entries of a tuning file by (op, *key values); TuningError if it is not one."""
    return _entries(Path(path), _read(Path(path)))


def _read(path: Path) -> dict[str, Any]:
    """The tuning file's JSON document, checked to be one (format and an entry list)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise TuningError(f"tuning file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TuningError(f"tuning file {path} is not readable JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(
            document.get("entries"), list):
        raise TuningError(f"tuning file {path} is not an effnet tuning file (format {FORMAT} with 'entries')")
    return document


def _entries(path: Path, document: dict[str, Any]) -> Table:
    table: Table = {}
    for entry in document["entries"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), dict):
            raise TuningError(f"tuning file {path}: an entry without a 'key' object")
        op = entry.get("op")
        key = _key(op, entry["key"])
        if entry.get("kernel") not in KERNELS[op] or not isinstance(entry.get("tiles"), list):
            raise TuningError(f"tuning file {path}: a {op} entry needs 'kernel' in {KERNELS[op]} and a 'tiles' list")
        tiles, lengths = entry["tiles"], TILE_LENGTHS[op, entry["kernel"]]
        if len(tiles) not in lengths or not all(isinstance(t, int) and t >= 0 for t in tiles):
            raise TuningError(f"tuning file {path}: {op} {entry['kernel']} tiles must be "
                              f"{' or '.join(map(str, lengths))} whole numbers, got {tiles}")
        if (entry["kernel"] == "banded" and op == "bn_depthwise_weight_grad"
                and entry["key"]["kernel_size"] not in (3, 5)):
            raise TuningError(f"tuning file {path}: the banded weight gradient is for 3x3 and 5x5 convs only")
        if entry["kernel"] == "banded" and tiles and not _banded_tile(tiles[0], entry["key"]):
            raise TuningError(f"tuning file {path}: the banded kernel takes tiles a power of two, at least 16 x the "
                              f"stride and as wide as the kernel, got {tiles[0]}")
        if entry["kernel"] == "sliding" and _sliding_misfit(op, entry["key"], tiles):
            raise TuningError(f"tuning file {path}: {_sliding_misfit(op, entry['key'], tiles)}")
        warm_at = {"depthwise": 5, "bn_depthwise": 4, "bn_depthwise_input_grad": 4}.get(op)
        if (entry["kernel"] == "tiled" and warm_at is not None and len(tiles) > warm_at and tiles[warm_at]
                and entry["key"]["stride"] != 1):
            raise TuningError(f"tuning file {path}: the warmed depthwise taps (a last tile value of 1) are for "
                              "stride 1 only")
        if op == "bn_pointwise_weight_grad" and len(tiles) == 6 and tiles[5] < 1:
            raise TuningError(f"tuning file {path}: the 1x1 weight gradient's sixth tile value is the programs per "
                              f"multiprocessor its split over the rows aims for, at least 1, got {tiles[5]}")
        if entry["kernel"] == "split" and tiles and (tiles[0] <= 0 or tiles[0] % 32):
            raise TuningError(f"tuning file {path}: the split excitation takes chunks of a multiple of 32 channels, "
                              f"got {tiles[0]}")
        if (entry["kernel"] == "streaming" and entry["key"]["gated"]
                and tiles[0] > entry["key"]["height"] * entry["key"]["width"]):
            raise TuningError(f"tuning file {path}: the streaming kernel takes a gated 1x1 conv in tiles of at most "
                              f"one image's pixels, got {tiles[0]} rows")
        table[key] = entry
    return table


def _banded_tile(width: int, key: dict[str, Any]) -> bool:
    from effnet.fast.banded import valid_tile  # (the kernel modules load when a file names one of their kernels)

    return valid_tile(width, key["kernel_size"], key["stride"])


def _sliding_misfit(op: str, key: dict[str, Any], tiles: list[int]) -> str | None:
    from effnet.fast.depthwise_sliding import misfit  # the input gradient's turned conv: stride 1 only

    return misfit(key["kernel_size"], key["stride"], tuple(tiles) or None,
                  (1,) if op == "bn_depthwise_input_grad" else (1, 2))


def other_gpu(path: str | Path) -> str | None:
    """Why the tuning file at `path` may not suit this machine: entries measured on another GPU than CUDA device
    0 (None when all name this one or none, or there is no GPU here: CPU runs use no tuned kernels)."""
    return _mismatch(path, _read(Path(path)))


def devices(document: dict[str, Any]) -> list[str]:
    """The GPU each entry of a tuning file's document was measured on, in order ('' where none is named)."""
    return [str(entry.get("device") or document.get("device") or "") if isinstance(entry, dict) else ""
            for entry in document.get("entries", [])]


def _mismatch(path: str | Path, document: dict[str, Any]) -> str | None:
    import torch

    measured = devices(document)
    if not any(measured) or not torch.cuda.is_available():
        return None
    here = torch.cuda.get_device_name(0)
    elsewhere = [name for name in measured if name and name != here]
    if not elsewhere:
        return None
    counts = ", ".join(f"{elsewhere.count(name)} on {name}" for name in dict.fromkeys(elsewhere))
    share = "was" if len(elsewhere) == len(measured) else f"has {len(elsewhere)} of {len(measured)} entries"
    return (f"tuning file {path} {share} measured on another GPU ({counts}), this machine has {here}: its choices "
            "compute the same function, but may be slower here than the defaults; run the sweeps here for a file "
            "of its own")


def _take(path: str | Path) -> Table:
    """The file's table, read once, with a warning if entries were measured on another GPU."""
    document = _read(Path(path))
    table = _entries(Path(path), document)
    mismatch = _mismatch(path, document)
    if mismatch:
        warnings.warn(mismatch, EffnetWarning, stacklevel=3)
    return table


def use(path: str | Path | None) -> None:
    """Take kernel choices from the tuning file at `path` from now on (None or 'none': the defaults only). A
    file measured on another GPU is taken with a warning."""
    global _active, _active_source
    defaults = path is None or _names_none(path)
    _active = {} if defaults else _take(path)
    _active_source = None if defaults else str(path)


def _names_none(path: str | Path) -> bool:
    """Whether a tuning file's name is 'none', which asks for the kernels' defaults (`EFFNET_TUNING=none`,
    `effnet bench --tuning none`)."""
    return str(path).strip().lower() == "none"


def shipped_file(device_name: str) -> Path | None:
    """The tuning file this package ships for a GPU of this name (`torch.cuda.get_device_name`), if any: its
    name with each run of characters other than letters, digits, '.', '-' and '_' made one '_'."""
    path = SHIPPED / (re.sub(r"[^A-Za-z0-9.-]+", "_", device_name).strip("_") + ".json")
    return path if path.is_file() else None


def _shipped_here() -> Path | None:
    import torch

    return shipped_file(torch.cuda.get_device_name()) if torch.cuda.is_available() else None


def active() -> Table:
    """The table in use: `use`'s, else the file named by $EFFNET_TUNING ('none': empty), else the file shipped
    for this GPU (`shipped_file`), each read once; else empty."""
    global _active, _active_source
    if _active is None:
        path = os.environ.get(ENV)
        shipped = None if path else _shipped_here()
        if path and not _names_none(path):
            _active, _active_source = _take(path), path
        elif shipped is not None:  # measured on this card as a whole (its goal rows ran with it): no warning
            _active, _active_source = _entries(shipped, _read(shipped)), str(shipped)
        else:
            _active, _active_source = {}, None
    return _active


def source() -> str | None:
    """The tuning file in use (`use`'s, $EFFNET_TUNING's or the shipped one), None when only the defaults are:
    benchmark reports record it beside the numbers it shaped."""
    active()
    return _active_source


def lookup(op: str, **key: Any) -> dict[str, Any] | None:
    """The tuned choice for one layer shape ({'kernel', 'tiles', ...}), or None for the default."""
    table = active()
    return table.get(_key(op, key)) if table else None


def record(path: str | Path, op: str, key: dict[str, Any], kernel: str, tiles: list | tuple, *,
           device: str, seconds: float, default_seconds: float, **extra: Any) -> None:
    """Add (or replace) one layer shape's choice, measured on `device`, in the tuning file at `path`, creating
    it if needed."""
    path = Path(path)
    document = json.loads(path.read_text()) if path.exists() else {"format": FORMAT, "device": device,
                                                                        "entries": []}
    wanted = _key(op, key)
    entries = [e for e in document["entries"] if _key(e["op"], e["key"]) != wanted]
    entries.append({"op": op, "key": key, "kernel": kernel, "tiles": list(tiles), "seconds": seconds,
                    "default_seconds": default_seconds, **extra, "device": device})
    document["entries"] = entries
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))


def recorded(path: str | Path, op: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The entry the tuning file at `path` holds for one layer shape (None: no file, or no entry for it)."""
    if not Path(path).exists():
        return None
    return load(path).get(_key(op, key))


def forget(path: str | Path, op: str, key: dict[str, Any]) -> bool:
    """Drop one layer shape's choice from the tuning file at `path` (a sweep found the default as fast, or the
    default changed since the file was written); whether there was one."""
    path = Path(path)
    if not path.exists():
        return False
    document = json.loads(path.read_text())
    wanted = _key(op, key)
    entries = [e for e in document["entries"] if _key(e["op"], e["key"]) != wanted]
    if len(entries) == len(document["entries"]):
        return False
    document["entries"] = entries
    path.write_text(json.dumps(document, indent=1))
    return True
