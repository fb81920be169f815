"""Preprocessing a model expects: input size, crop fraction and mode, interpolation, mean and std."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # TF EfficientNet-Lite weights
INCEPTION_STD = (0.5, 0.5, 0.5)
CROP_PADDING = 32  # official code: centre crop of R from a resize to R + 32
# How the eval resize treats the aspect ratio (timm's names): "center" resizes the shorter side to
# R / crop_pct and centre-crops R x R; "squash" resizes both sides to R / crop_pct (aspect ratio
# lost, as Hugging Face's EfficientNetImageProcessor does), then centre-crops.
CROP_MODES = ("center", "squash")


@dataclass(frozen=True)
class DataConfig:
    input_size: tuple[int, int, int]
    crop_pct: float
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_mode: str = "center"

    def __getitem__(self, key: str) -> Any:  # timm-style `data_config["input_size"]`
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        return cls(
            input_size=tuple(data["input_size"]),
            crop_pct=float(data["crop_pct"]),
            interpolation=str(data.get("interpolation", "bicubic")),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),
            std=tuple(data.get("std", IMAGENET_STD)),
            crop_mode=str(data.get("crop_mode", "center")),
        )


def default_data_config(resolution: int, in_channels: int = 3,
                        mean: tuple[float, ...] = IMAGENET_MEAN,
                        std: tuple[float, ...] = IMAGENET_STD) -> DataConfig:
    """The official evaluation preprocessing at `resolution`: crop R out of R + 32, bicubic."""
    return DataConfig(
        input_size=(in_channels, resolution, resolution),
        crop_pct=round(resolution / (resolution + CROP_PADDING), 3),
        mean=tuple(mean),
        std=tuple(std),
    )
