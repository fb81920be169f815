"""`Predictor`: load a model once, then classify images with the model's own evaluation preprocessing.

Inputs may be image paths, PIL images, HWC uint8 numpy arrays or CHW tensors (uint8 0..255 or
float 0..1). Every input goes through `make_eval_transform(data_config)` (resize to R / crop_pct,
centre crop R, normalise), the pipeline `effnet eval` uses, so a prediction here agrees with an
evaluation of the same file. Paths are decoded by `effnet.data.load_image`, which turns EXIF
rotation, CMYK, alpha and 16-bit images into upright 8-bit RGB and a broken file into an
`ImageLoadError` naming it.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from effnet.data import ImageLoadError, SkippedFile, check_image, load_image, make_eval_transform, to_rgb
from effnet.data.skipped import warn_skipped
from effnet.data.tree import IMAGE_EXTENSIONS, list_class_files
from effnet import devices
from effnet.errors import DeviceError, EffnetError, WeightsError
from effnet.fast import BACKENDS as FAST_BACKENDS
from effnet.spec.data import DataConfig

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

IMAGENET_NUM_CLASSES = 1000
DEFAULT_BATCH_SIZE = 32
BACKENDS = (*FAST_BACKENDS, "onnxruntime")
WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "model_ema.safetensors"


class InferenceError(EffnetError, ValueError):
    """A prediction or evaluation request that cannot be served: bad input, option or device."""


# ---------------------------------------------------------------- labels, devices, weights


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet-1k class names in index order, from torchvision (None if it moved them).

    torchvision keeps the list in a private module; a missing list only costs readable labels,
    so it falls back instead of failing.
    """
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES
    except ImportError:
        return None
    names = list(_IMAGENET_CATEGORIES)
    return names if len(names) == IMAGENET_NUM_CLASSES else None


def class_labels(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """One label per output: saved names, else ImageNet's for 1000 outputs, else `class_<i>`.

    Saved names of another length are ignored: `create_model(path, num_classes=N)` starts a new
    classifier but keeps the file's names, which then describe the old head.
    """
    if class_names is not None and len(class_names) == num_classes:
        return [str(name) for name in class_names]
    if num_classes == IMAGENET_NUM_CLASSES:
        names = imagenet_class_names()
        if names is not None:
            return names
    return [f"class_{index}" for index in range(num_classes)]


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or a torch.device (`effnet.devices.resolve_device`), as an InferenceError."""
    try:
        return devices.resolve_device(device)
    except DeviceError as error:
        raise InferenceError(str(error)) from None


def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files named, with each folder replaced by the image files under it (recursively, in name order),
    for `effnet predict`. A folder's files that fail the header check are left out, each with a
    SkippedFileWarning; a folder with no image is an InferenceError. Named files are kept as given."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)
            continue
        files = list_class_files(path)
        usable = []
        for file in files.images:
            reason = check_image(file)
            if reason is None:
                usable.append(file)
            else:
                warn_skipped(SkippedFile(str(file), reason))
        if not usable:
            raise InferenceError(f"{path}: a folder with no usable image (files ending in "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
        found.extend(usable)
    return found


def weights_path(path: str | os.PathLike, ema: bool = False) -> Path:
    """The weights file for a file or run folder; with `ema`, the run's `model_ema.safetensors`."""
    path = Path(path).expanduser()
    if not ema:
        return path
    if path.is_dir():
        candidate = path / EMA_WEIGHTS_NAME
    elif path.name == EMA_WEIGHTS_NAME:
        candidate = path
    elif path.name == WEIGHTS_NAME:
        candidate = path.with_name(EMA_WEIGHTS_NAME)
    else:
        raise WeightsError(f"--ema needs a run folder or its {WEIGHTS_NAME}, got {path}")
    if not candidate.is_file():
        raise WeightsError(f"no EMA weights: {candidate} not found (was the run trained with ema_decay 0?)")
    return candidate


def train_config_of(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The training options an effnet run stored in its weights (empty for converted weights)."""
    try:
        config = json.loads(metadata.get("train_config", "{}"))
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def trained_data_config(data_config: DataConfig, metadata: Mapping[str, str]) -> DataConfig:
    """The preprocessing the weights were validated with during training.

    Training on the tiny-image data sets (digits, Fashion-MNIST, CIFAR) skips the centre crop
    (effnet.train.build.data_config_for), but the file stores the model's default crop_pct; a
    crop there would cut away a quarter of each border that the model never saw cropped.
    """
    from effnet.train.build import SMALL_IMAGE_DATA  # the training side's rule, not a copy of it

    if train_config_of(metadata).get("data") in SMALL_IMAGE_DATA:
        return replace(data_config, crop_pct=1.0)
    return data_config


# ---------------------------------------------------------------- input conversion


def _array_to_pil(array: np.ndarray, where: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise InferenceError(f"{where}: numpy images must be uint8 HWC (or HW), got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return to_rgb(Image.fromarray(np.ascontiguousarray(array)))  # 4 channels: RGBA over white
    raise InferenceError(f"{where}: numpy images must be HWC with 1, 3 or 4 channels (or HW), "
                         f"got shape {tuple(array.shape)}")


def _tensor_to_image(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """A CHW RGB tensor for the v2 transforms: uint8 0..255 or float 0..1, on the CPU."""
    tensor = tensor.detach().cpu()
    if tensor.ndim == 2:
        tensor = tensor[None]  # HW: one grey channel
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise InferenceError(f"{where}: tensors must be CHW with 1 or 3 channels, got shape {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise InferenceError(f"{where}: tensors must be uint8 (0..255) or float (0..1), got {tensor.dtype}")
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageLoadError(str(path), "no such file")
    if not path.is_file():
        raise ImageLoadError(str(path), "not a file")
    return path


def _as_list(inputs: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """A single image becomes a list of one; a 4-D tensor is a batch of CHW images."""
    if isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray)):
        return [inputs]
    if isinstance(inputs, torch.Tensor):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    return list(inputs)


# ---------------------------------------------------------------- the predictor


class Predictor:
    """A model in eval mode on a device, its preprocessing and one label per output.

    Build it once (`from_weights`, `from_model`, or from a model), then call `predict` as often
    as needed: nothing is reloaded between calls.

    backend: `torch` (eager PyTorch on `device`), `fast` (`effnet.fast.optimize_for_inference`: BN
        folded, channels-last, fused MBConv blocks; bf16 weights on a GPU, float32 on the CPU) or
        `onnxruntime` (CPU only): the model is exported
        to ONNX once, parity-checked, and run by onnxruntime; `onnx_path` runs an already exported
        file of the same weights instead (`effnet export`), `intra_op_threads` sets its thread count.
    """

    def __init__(self, model: nn.Module, *, class_names: Sequence[str] | None = None,
                 data_config: DataConfig | None = None, device: str | torch.device = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE, backend: str = "torch",
                 onnx_path: str | os.PathLike | None = None, intra_op_threads: int | None = None) -> None:
        if batch_size < 1:
            raise InferenceError(f"batch_size must be at least 1, got {batch_size}")
        if backend not in BACKENDS:
            raise InferenceError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend != "onnxruntime" and (onnx_path is not None or intra_op_threads is not None):
            raise InferenceError("onnx_path and intra_op_threads need backend='onnxruntime'")
        data_config = data_config if data_config is not None else getattr(model, "data_config", None)
        if data_config is None:
            raise InferenceError("the model has no data_config; pass data_config= (input size, crop, mean, std)")
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Linear):
            raise InferenceError("Predictor needs a classifier model (not features_only)")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.data_config = data_config
        self.transform = make_eval_transform(data_config)
        self.batch_size = batch_size
        self.num_classes = classifier.out_features
        names = class_names if class_names is not None else getattr(model, "class_names", None)
        self.labels = class_labels(names, self.num_classes)
        self.backend = backend
        self.session = self._onnx_session(onnx_path, intra_op_threads) if backend == "onnxruntime" else None
        if backend == "fast":
            from effnet.fast import optimize_for_device

            self.model = optimize_for_device(self.model, self.device)

    def _onnx_session(self, onnx_path: str | os.PathLike | None, intra_op_threads: int | None) -> Any:
        from effnet.inference.backends import OnnxRuntimeSession, session_for_model

        if self.device.type != "cpu":
            raise InferenceError(f"the onnxruntime backend runs on the CPU, got device {self.device}")
        size = tuple(int(side) for side in self.data_config.input_size[1:])
        if onnx_path is None:
            return session_for_model(self.model, size, intra_op_threads=intra_op_threads)
        session = OnnxRuntimeSession(Path(onnx_path).expanduser(), intra_op_threads=intra_op_threads)
        fixed = [side for side in session.input_shape[2:] if isinstance(side, int)]
        if len(session.input_shape) != 4 or any(side not in size for side in fixed):
            raise InferenceError(f"{onnx_path} takes input {session.input_shape}, but this model's "
                                 f"preprocessing makes (N, 3, {size[0]}, {size[1]})")
        return session

    @classmethod
    def from_weights(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                     batch_size: int = DEFAULT_BATCH_SIZE, ema: bool = False, backend: str = "torch",
                     onnx_path: str | os.PathLike | None = None,
                     intra_op_threads: int | None = None) -> "Predictor":
        """Load an effnet weights file or run folder (`ema=True`: the run's EMA weights)."""
        from effnet.models import create_model
        from effnet.weights.io import read_metadata

        path = weights_path(path, ema)
        model = create_model(path)
        data_config = trained_data_config(model.data_config, read_metadata(path))
        return cls(model, data_config=data_config, device=device, batch_size=batch_size, backend=backend,
                   onnx_path=onnx_path, intra_op_threads=intra_op_threads)

    @classmethod
    def from_model(cls, name: str, *, device: str | torch.device = "cpu", batch_size: int = DEFAULT_BATCH_SIZE,
                   backend: str = "torch", onnx_path: str | os.PathLike | None = None,
                   intra_op_threads: int | None = None, **options: Any) -> "Predictor":
        """A registered model by name, with random weights (effnet bundles none); `options` go to
        `create_model` (`num_classes`, `resolution`, ...). Useful to check a pipeline end to end."""
        from effnet.models import create_model

        return cls(create_model(name, **options), device=device, batch_size=batch_size, backend=backend,
                   onnx_path=onnx_path, intra_op_threads=intra_op_threads)

    def preprocess(self, image: ImageInput, where: str = "input") -> torch.Tensor:
        """One input as the model's normalised `(C, H, W)` float tensor."""
        if isinstance(image, (str, os.PathLike)):
            picture: Any = load_image(_check_path(image))
        elif isinstance(image, Image.Image):
            picture = to_rgb(image)
        elif isinstance(image, np.ndarray):
            picture = _array_to_pil(image, where)
        elif isinstance(image, torch.Tensor):
            picture = _tensor_to_image(image, where)
        else:
            raise InferenceError(f"{where}: expected a path, PIL image, numpy array or tensor, "
                                 f"got {type(image).__name__}")
        return self.transform(picture).as_subclass(torch.Tensor)  # plain tensor, not tv_tensors.Image

    @torch.inference_mode()
    def predict_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities `(N, num_classes)` for a preprocessed `(N, C, H, W)` batch."""
        if self.session is not None:
            logits = self.session.run(batch)  # (N, num_classes), onnxruntime on the CPU
        else:
            logits = self.model(batch.to(self.device))  # (N, num_classes)
        return logits.float().softmax(dim=1).cpu()

    def predict(self, inputs: ImageInput | Iterable[ImageInput], topk: int = 5, *,
                skip_unreadable: bool = False) -> list[list[dict[str, Any]] | None]:
        """Top-k `{"index", "label", "prob"}` per input, most probable first, in input order.

        Every path is checked before any work starts, so a typo fails at once and names the file. A file
        that exists but cannot be decoded (a truncated JPEG passes the header check) raises an
        ImageLoadError, or with `skip_unreadable` is left out with a SkippedFileWarning and None in its
        place, so one broken file in a folder does not cost the others' results.
        """
        if topk < 1:
            raise InferenceError(f"topk must be at least 1, got {topk}")
        items = _as_list(inputs)
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                _check_path(item)
        k = min(topk, self.num_classes)
        results: list[list[dict[str, Any]] | None] = []
        for start in range(0, len(items), self.batch_size):
            chunk = [self._preprocessed(item, start + offset, skip_unreadable)
                     for offset, item in enumerate(items[start:start + self.batch_size])]
            ready = [tensor for tensor in chunk if tensor is not None]
            rows: Iterator = iter(())
            if ready:
                probs, indices = self.predict_batch(torch.stack(ready)).topk(k, dim=1)  # (N, k) each
                rows = zip(probs.tolist(), indices.tolist())
            for tensor in chunk:
                if tensor is None:
                    results.append(None)
                    continue
                row_probs, row_indices = next(rows)
                results.append([{"index": index, "label": self.labels[index], "prob": prob}
                                for index, prob in zip(row_indices, row_probs)])
        return results

    def _preprocessed(self, item: ImageInput, position: int, skip_unreadable: bool) -> torch.Tensor | None:
        """`preprocess(item)`, or None (with a SkippedFileWarning) for an undecodable file under `skip_unreadable`."""
        try:
            return self.preprocess(item, _describe_input(item, position))
        except ImageLoadError as error:
            if not skip_unreadable:
                raise
            warn_skipped(SkippedFile(error.path, error.reason))
            return None


def _describe_input(item: ImageInput, position: int) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"input {position}"
