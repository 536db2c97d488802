"""The one preprocessing spec: training, batch inference and the online service all build from it.

The pipeline is split where the data crosses a process boundary:

* ``decode`` + ``geometry``: bytes -> RGB -> resize -> centre crop -> uint8 CHW. Runs on CPU
  (Ray Data workers, the Serve preprocessor); uint8 is 4x smaller than float32 on the wire.
* ``augment``: random train-time transforms on uint8 CHW, CPU, train split only.
* ``normalizer``: uint8 -> float -> (x - mean) / std. Runs where the model runs (GPU if any),
  inside the one forward path (:mod:`lensops.model.forward`).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict
from torchvision import tv_tensors
from torchvision.transforms import v2

from lensops.config import AugmentConfig, PreprocessConfig
from lensops.model.backbones import IMAGENET_MEAN, IMAGENET_STD


class PreprocessSpec(BaseModel):
    """Fully resolved preprocessing parameters; saved inside every model spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def resolve(
        cls,
        cfg: PreprocessConfig,
        default_mean: tuple[float, float, float] = IMAGENET_MEAN,
        default_std: tuple[float, float, float] = IMAGENET_STD,
    ) -> PreprocessSpec:
        """Fill unset values: normalisation from the backbone, resize size from the crop size."""
        return cls(
            image_size=cfg.image_size,
            resize_size=cfg.resize_size or cfg.image_size,
            mean=cfg.mean or default_mean,
            std=cfg.std or default_std,
        )


def decode(data: bytes) -> Image.Image:
    """Decode image bytes into an RGB PIL image (grayscale and palette images are expanded)."""
    with Image.open(io.BytesIO(data)) as img:
        return rgb(img)


def rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of a decoded image."""
    if img.mode.startswith("I;16"):
        # Pillow clips 16-bit values at 255 when converting; keep the high byte instead.
        return Image.fromarray((np.asarray(img) >> 8).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def geometry(spec: PreprocessSpec) -> v2.Compose:
    """PIL image -> uint8 tensor (3, image_size, image_size)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(spec.resize_size, antialias=True),
            v2.CenterCrop(spec.image_size),
        ]
    )


def normalizer(spec: PreprocessSpec) -> v2.Compose:
    """uint8 tensor (..., 3, H, W) -> normalised float32 on the tensor's own device."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


def to_uint8(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    """Raw bytes -> uint8 array (3, H, W): what crosses from the CPU stage to the model."""
    return geometry(spec)(decode(data)).numpy()


def image_to_uint8(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """:func:`to_uint8` of an image decoded already (by the image check)."""
    return geometry(spec)(rgb(img)).numpy()


def mask_to_uint8(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    """Mask file bytes -> 0/1 uint8 array (H, W) on the images' grid: any non-zero pixel is 1,
    and :func:`geometry` resizes it by nearest neighbour, so it stays binary."""
    with Image.open(io.BytesIO(data)) as img:
        mask = torch.from_numpy((np.asarray(img.convert("L")) > 0).astype(np.uint8))
    return geometry(spec)(tv_tensors.Mask(mask)).numpy()


def augmentation(cfg: AugmentConfig) -> v2.Compose:
    """Random train-time transforms on one uint8 image tensor (3, H, W)."""
    steps: list[v2.Transform] = []
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip:
        steps.append(v2.RandomVerticalFlip(cfg.vflip))
    if cfg.rotation_degrees:
        steps.append(v2.RandomRotation(cfg.rotation_degrees))
    if any((cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)):
        steps.append(v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    if cfg.blur_prob:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, cfg.blur_sigma)], p=cfg.blur_prob))
    if cfg.noise_std:
        steps.append(v2.Lambda(lambda img: _add_noise(img, cfg.noise_std)))
    return v2.Compose(steps or [v2.Identity()])


def _add_noise(img: torch.Tensor, std: float) -> torch.Tensor:
    noisy = img.float() + torch.randn(img.shape) * std
    return noisy.clamp_(0, 255).to(torch.uint8)
