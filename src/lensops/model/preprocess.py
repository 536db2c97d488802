"""The one preprocessing spec: training, batch inference and the online service all build from it.

The pipeline is split where the data crosses a process boundary:

* ``decode`` + ``fit_to_input``: bytes -> RGB -> resize -> centre crop -> uint8 CHW, with
  Pillow alone: the pixels of torchvision's ``Resize`` + ``CenterCrop`` on a PIL image (the
  eval transform of torchvision's classification references). Runs on CPU (Ray Data workers,
  the Serve preprocessor); uint8 is 4x smaller than float32 on the wire. A multi-band raster
  (``bands`` set) is read with rasterio instead, and each band mapped to 0..255 by its range on
  the training split (``band_ranges``), so everything after the decode is the same for any
  number of channels.
* ``augment``: random train-time transforms on uint8 CHW (torchvision), CPU, train split only.
* ``normalizer``: uint8 -> float -> (x - mean) / std. Runs where the model runs (GPU if any),
  inside the one forward path (:mod:`lensops.model.forward`).

The decode needs neither torch nor torchvision, and this module imports them only where an
augmentation or a normaliser is built: the processes that only decode (Ray Data's decode
tasks, the Serve preprocessor, batch scoring's readers), and Ray's coordinators that unpickle
specs and the data functions without running them, never pay their import (about 7 s of CPU
each on 2 cores).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from lensops.config import AugmentConfig, PreprocessConfig

if TYPE_CHECKING:
    import torch
    from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation that torchvision's ImageNet weights (and most of timm's) expect."""


class PreprocessSpec(BaseModel):
    """Fully resolved preprocessing parameters; saved inside every model spec."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bands: tuple[str, ...] | None = None
    """Raster bands read from each input (None: 8-bit images, read as RGB)."""
    band_ranges: tuple[tuple[float, float], ...] | None = None
    """Per band, the values mapped to 0 and 255: the training split's 1st and 99th percentiles."""

    @classmethod
    def resolve(
        cls,
        cfg: PreprocessConfig,
        default_mean: tuple[float, ...] = IMAGENET_MEAN,
        default_std: tuple[float, ...] = IMAGENET_STD,
        band_stats: BandStats | None = None,
    ) -> PreprocessSpec:
        """Fill unset values: normalisation from the backbone (for rasters, from the training
        split's ``band_stats``), resize size from the crop size."""
        if cfg.bands and band_stats is None:
            raise ValueError("preprocess.bands needs the band statistics of the training split")
        return cls(
            image_size=cfg.image_size,
            resize_size=cfg.resize_size or cfg.image_size,
            mean=cfg.mean or (band_stats.mean if band_stats else default_mean),
            std=cfg.std or (band_stats.std if band_stats else default_std),
            bands=tuple(cfg.bands) if cfg.bands else None,
            band_ranges=band_stats.ranges if band_stats else None,
        )


@dataclass(frozen=True)
class BandStats:
    ranges: tuple[tuple[float, float], ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


RANGE_PERCENTILES = (1.0, 99.0)
"""A band's range, robust to a few hot or dead pixels."""
PIXELS_PER_RASTER = 16384
"""Valid pixels each raster contributes to the statistics, at most (an even sample)."""


def band_stats(rasters: Iterable[tuple[np.ndarray, np.ndarray]]) -> BandStats:
    """Statistics of rasters, each a (bands, H, W) array with its (H, W) valid-pixel mask (the
    training split's inputs): each band's range (:data:`RANGE_PERCENTILES` of its valid pixels),
    and the mean and std of the band once mapped to 0..1 by it, for normalisation."""
    samples = []
    for array, valid in rasters:
        pixels = array[:, valid]
        samples.append(pixels[:, :: max(1, pixels.shape[1] // PIXELS_PER_RASTER)])
    pixels = np.concatenate(samples, axis=1).astype(np.float64)
    if pixels.shape[1] == 0:
        raise ValueError("no valid pixel in the training rasters: every one is nodata")
    low, high = np.percentile(pixels, RANGE_PERCENTILES, axis=1)
    high = np.maximum(high, low + 1e-6)
    scaled = np.clip((pixels - low[:, None]) / (high - low)[:, None], 0, 1)
    ranges = tuple((float(lo), float(hi)) for lo, hi in zip(low, high, strict=True))
    return BandStats(ranges, tuple(scaled.mean(1).tolist()), tuple(np.maximum(scaled.std(1), 1e-3).tolist()))


def bands_to_uint8(array: np.ndarray, valid: np.ndarray, ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(bands, H, W) values -> uint8, each band's range onto 0..255; invalid pixels are 0."""
    low, high = (np.asarray(side, np.float32)[:, None, None] for side in zip(*ranges, strict=True))
    scaled = np.clip((array.astype(np.float32) - low) / (high - low) * 255, 0, 255)
    return np.where(valid, scaled, 0).round().astype(np.uint8)


def raster_to_uint8(array: np.ndarray, valid: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A raster's (bands, H, W) values and valid mask -> the model's uint8 input, by ``spec``'s
    band ranges and geometry (band by band: Pillow resamples the channels of an image alike)."""
    pixels = bands_to_uint8(array, valid, spec.band_ranges)
    return np.stack([np.asarray(fit_to_input(Image.fromarray(band), spec)) for band in pixels])


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


def fit_to_input(
    img: Image.Image, spec: PreprocessSpec, resample: Image.Resampling = Image.Resampling.BILINEAR
) -> Image.Image:
    """The short side resized to ``resize_size`` (antialiased), then the centre ``image_size``
    square, zero where it passes an edge: torchvision's ``Resize`` and ``CenterCrop`` on a PIL
    image, pixel for pixel."""
    width, height = resized_size(img.width, img.height, spec)
    left, top = crop_start(width, spec.image_size), crop_start(height, spec.image_size)
    box = (left, top, left + spec.image_size, top + spec.image_size)
    return img.resize((width, height), resample).crop(box)


def resized_size(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int]:
    """(width, height) after the resize of :func:`fit_to_input` (torchvision's rounding)."""
    short, long = sorted((width, height))
    resized_long = int(spec.resize_size * long / short)
    return (spec.resize_size, resized_long) if width <= height else (resized_long, spec.resize_size)


def crop_start(side: int, crop: int) -> int:
    """Where the centre crop starts along a side (negative: padded, torchvision's split of it)."""
    return -((crop - side) // 2) if crop > side else round((side - crop) / 2.0)


def model_view(width: int, height: int, spec: PreprocessSpec) -> tuple[float, float, float, float]:
    """Where the model's input lies on an upload of ``width`` x ``height`` px, as
    :func:`fit_to_input` cuts it: (left, top) of its first pixel and the upload pixels per input
    pixel along x and y."""
    resized = resized_size(width, height, spec)
    left, top = (crop_start(side, spec.image_size) for side in resized)
    per_x, per_y = width / resized[0], height / resized[1]
    return left * per_x, top * per_y, per_x, per_y


def normalizer(spec: PreprocessSpec) -> v2.Compose:
    """uint8 tensor (..., channels, H, W) -> normalised float32 on the tensor's own device."""
    import torch
    from torchvision.transforms import v2

    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


def to_uint8(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    """Raw bytes -> uint8 array (channels, H, W): what crosses from the CPU stage to the model."""
    if spec.bands:
        from lensops.data import rasters  # rasterio, only where rasters are read

        raster = rasters.read_bytes(data, spec.bands)
        return raster_to_uint8(raster.data, rasters.valid_mask(raster), spec)
    return _channels_first(fit_to_input(decode(data), spec))


def image_to_uint8(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """:func:`to_uint8` of an image decoded already (by the image check)."""
    return _channels_first(fit_to_input(rgb(img), spec))


def _channels_first(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))


def mask_to_uint8(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    """Mask file bytes -> 0/1 uint8 array (H, W) on the images' grid: any non-zero pixel is 1,
    and :func:`fit_to_input` resizes it by nearest neighbour, so it stays binary."""
    with Image.open(io.BytesIO(data)) as img:
        mask = Image.fromarray((np.asarray(img.convert("L")) > 0).astype(np.uint8))
    return np.asarray(fit_to_input(mask, spec, Image.Resampling.NEAREST))


def augmentation(cfg: AugmentConfig) -> v2.Compose:
    """Random train-time transforms on one uint8 image tensor (3, H, W)."""
    from torchvision.transforms import v2

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
    import torch

    noisy = img.float() + torch.randn(img.shape) * std
    return noisy.clamp_(0, 255).to(torch.uint8)
