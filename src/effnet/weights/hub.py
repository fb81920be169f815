"""Published weights by name: fetched into a local cache, verified, converted once.

`effnet.create_model(name, pretrained=True | "timm:TAG" | "torchvision:ENUM" | "hf:REPO")` lands
here (see `published` for the references). Layout under the cache root (`set_cache_dir`, else
`$EFFNET_CACHE`, else `~/.cache/effnet`):

    hub/timm/<tag>/model.safetensors, config.json
    hub/hf/<owner>/<repo>/config.json, preprocessor_config.json, model.safetensors | pytorch_model.bin
    hub/torchvision/<the URL's file name, e.g. efficientnet_b0_rwightman-7f5810bc.pth>
    converted/<model>/<source>/<name>.safetensors    (the effnet file that is loaded)

Verification: a downloaded file must have the SHA-256 the hub reports (the LFS object id; git's
blob id for small files) or, for torchvision, the hash prefix in its file name; effnet then
records it in `<file>.sha256` and checks it again before converting. A file put in place by hand
(offline machines: the error names the URL and the path) is checked against the name's prefix
where there is one. Downloads are off under `HF_HUB_OFFLINE=1` or `EFFNET_OFFLINE=1`; a missing
file then raises DownloadError naming what to fetch and where to put it.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from effnet.errors import DownloadError, WeightsError
from effnet.weights.published import Reference, resolve

_cache_root: Path | None = None
_TRUE = ("1", "true", "yes", "on")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule: `name-<sha256 prefix>.pth`


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Use `path` as the cache root from now on (None: back to $EFFNET_CACHE or ~/.cache/effnet)."""
    global _cache_root
    _cache_root = Path(path).expanduser() if path is not None else None


def cache_dir() -> Path:
    """The cache root: `set_cache_dir`'s, else $EFFNET_CACHE, else ~/.cache/effnet."""
    if _cache_root is not None:
        return _cache_root
    return Path(os.environ.get("EFFNET_CACHE") or "~/.cache/effnet").expanduser()


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("EFFNET_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class RemoteFile:
    """One file to have locally: the first of `names` present in `folder` (fetched in that order)."""

    folder: Path
    names: tuple[str, ...]
    urls: tuple[str, ...]
    repository: str | None = None  # a Hugging Face hub repository, fetched with huggingface_hub

    def local(self) -> Path | None:
        return next((self.folder / name for name in self.names if (self.folder / name).is_file()), None)

    def wanted(self) -> str:
        others = f" (or {', '.join(self.names[1:])} beside it)" if len(self.names) > 1 else ""
        return f"{self.urls[0]} to {self.folder / self.names[0]}{others}"


# --- hashes -----------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify(path: Path, url: str) -> str:
    """The file's SHA-256, checked against the one recorded when fetched, else against the hash
    prefix in its name (torchvision); DownloadError naming the file and URL when they differ."""
    actual = sha256_of(path)
    record = _record(path)
    if record.is_file():
        expected, origin = record.read_text().strip(), f"the SHA-256 recorded when it was fetched ({record})"
    elif match := _HASH_IN_NAME.search(path.name):
        expected, origin = match[1], "the hash prefix in its name"
    else:
        return actual  # nothing to check against offline: taken as put there
    if not actual.startswith(expected):
        raise DownloadError(f"{path} (sha256 {actual[:12]}…) does not match {origin}: damaged or not the "
                            f"published file; delete it and fetch {url} to {path} again")
    if not record.is_file():
        record.write_text(actual + "\n")
    return actual


# --- fetching ---------------------------------------------------------------------------------

def _download_hub_file(repository: str, name: str, folder: Path) -> Path:
    """One file of a hub repository into `folder`, checked against the hub's own hash."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError:
        raise DownloadError("fetching from the Hugging Face hub needs huggingface_hub: pip install "
                            "huggingface_hub (or 'effnet[hub]')") from None

    # The hub's ETag is the file's SHA-256 when stored with LFS, its git blob SHA-1 otherwise.
    reported = (get_hf_file_metadata(hf_hub_url(repository, name)).etag or "").strip('"')
    path = Path(hf_hub_download(repository, name, local_dir=folder))
    hashes = {64: sha256_of, 40: _git_blob_sha1}
    actual = hashes[len(reported)](path) if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", reported) else reported
    if actual != reported:
        path.unlink()
        raise DownloadError(f"{repository}/{name}: downloaded file's hash {actual[:12]}… is not the hub's "
                            f"{reported[:12]}…; try again")
    return path


def download_url(url: str, path: Path) -> Path:
    """`url` to `path` with torch.hub, checking the hash prefix in the file name where there is one."""
    import torch.hub

    match = _HASH_IN_NAME.search(path.name)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match[1] if match else None, progress=False)
    except RuntimeError as error:  # torch.hub's hash mismatch
        raise DownloadError(f"{url}: {str(error).splitlines()[0]}") from None
    return path


def _fetch(file: RemoteFile) -> Path | str:
    """The fetched file, or why it could not be fetched (network, HTTP and hub errors alike)."""
    file.folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, url in zip(file.names, file.urls):
        try:
            path = (_download_hub_file(file.repository, name, file.folder) if file.repository
                    else download_url(url, file.folder / name))
        except DownloadError:
            raise
        except Exception as error:  # reported below with what to do instead
            failures.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else name}")
            continue
        _record(path).write_text(sha256_of(path) + "\n")
        return path
    return "; ".join(dict.fromkeys(failures))


def ensure(files: list[RemoteFile]) -> list[Path]:
    """Every file locally and verified, fetching what is missing unless offline."""
    missing = [file for file in files if file.local() is None]
    if missing and offline():
        raise DownloadError("not in the cache and downloads are off (HF_HUB_OFFLINE / EFFNET_OFFLINE): fetch "
                            + " and ".join(file.wanted() for file in missing))
    for file in missing:
        fetched = _fetch(file)
        if isinstance(fetched, str):
            still = [other for other in files if other.local() is None]
            wanted = " and ".join(other.wanted() for other in still)
            raise DownloadError(f"cannot download ({fetched}): fetch {wanted}")
    paths = [file.local() for file in files]
    for file, path in zip(files, paths):
        verify(path, file.urls[file.names.index(path.name)])
    return paths


# --- per source: the files, and how to convert them -------------------------------------------

def _hub_file(repository: str, folder: Path, *names: str) -> RemoteFile:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    urls = tuple(f"{endpoint}/{repository}/resolve/main/{name}" for name in names)
    return RemoteFile(folder, names, urls, repository)


def _imagenet_classes() -> list[str]:
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _timm(reference: Reference, out: Path) -> Path:
    from effnet.weights.convert import convert_file

    repository, folder = f"timm/{reference.name}", cache_dir() / "hub" / "timm" / reference.name
    ensure([_hub_file(repository, folder, "model.safetensors"), _hub_file(repository, folder, "config.json")])
    # timm tags end in the data set the weights were last trained on: ImageNet-1k's classes in order.
    names = _imagenet_classes() if reference.name.endswith("in1k") else None
    metadata = {"published": str(reference), "url": f"https://huggingface.co/{repository}"}
    converted = convert_file(folder, out, "timm", reference.model_name, class_names=names, metadata=metadata)
    return converted.path


def _torchvision(reference: Reference, out: Path) -> Path:
    import torchvision

    from effnet.weights.convert import convert_file

    weights_enum = torchvision.models.get_model_weights(reference.peer_name)
    try:
        weights = weights_enum[reference.name]
    except KeyError:
        raise WeightsError(f"torchvision {reference.peer_name} has no weights {reference.name!r}; known: "
                           f"{', '.join(dict.fromkeys(['DEFAULT', *weights_enum.__members__]))}") from None
    folder = cache_dir() / "hub" / "torchvision"
    name = weights.url.rsplit("/", 1)[-1]
    [path] = ensure([RemoteFile(folder, (name,), (weights.url,))])
    transform = weights.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    preprocessing = dict(input_size=(3, crop, crop), crop_pct=crop / resize, crop_mode="center",
                         interpolation=transform.interpolation.value, mean=tuple(transform.mean),
                         std=tuple(transform.std))
    metadata = {"published": str(reference), "url": weights.url}
    return convert_file(path, out, "torchvision", reference.model_name, preprocessing=preprocessing,
                        class_names=weights.meta["categories"], metadata=metadata).path


def _transformers(reference: Reference, out: Path) -> Path:
    from effnet.weights.convert import convert_file

    repository, folder = reference.name, cache_dir() / "hub" / "hf" / reference.name
    ensure([_hub_file(repository, folder, "model.safetensors", "pytorch_model.bin"),
            _hub_file(repository, folder, "config.json"), _hub_file(repository, folder, "preprocessor_config.json")])
    metadata = {"published": str(reference), "url": f"https://huggingface.co/{repository}"}
    return convert_file(folder, out, "transformers", reference.model_name, metadata=metadata).path


_CONVERT: dict[str, Callable[[Reference, Path], Path]] = {
    "timm": _timm, "torchvision": _torchvision, "transformers": _transformers}


def converted_path(reference: Reference) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", reference.name)
    return cache_dir() / "converted" / reference.model_name / reference.source / f"{safe}.safetensors"


def published_weights(model_name: str, pretrained: Any) -> Path:
    """The effnet weights file for `model_name` and `pretrained` (True or a reference), fetching and
    converting the peer's checkpoint the first time; later calls read the converted file."""
    reference = resolve(model_name, pretrained)
    out = converted_path(reference)
    if out.is_file():
        return out
    return _CONVERT[reference.source](reference, out)
