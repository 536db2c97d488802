"""One upload checked and turned into the model's uint8 input: what the Serve preprocessor,
the FastAPI baseline and the request parsing share.

Image acceptance is :func:`lensops.data.images.load_served_image`, built on the rule that
decides which training files are skipped, so the service never accepts what training would
reject. Nothing here imports torch: the preprocessor replicas that run it never load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from lensops.config import ServeConfig
from lensops.data import rasters
from lensops.data.images import Issue, load_served_image
from lensops.model.preprocess import PreprocessSpec, image_to_uint8, raster_to_uint8
from lensops.monitoring import records
from lensops.serving.errors import ApiError


class InputLimits(BaseModel):
    max_bytes: int
    min_side: int
    max_side: int
    max_pixels: int
    max_items: int

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> InputLimits:
        return cls(
            max_bytes=cfg.max_request_bytes,
            min_side=cfg.min_side,
            max_side=cfg.max_side,
            max_pixels=cfg.max_pixels,
            max_items=cfg.max_batch_items,
        )


@dataclass(frozen=True)
class Prepared:
    """One accepted upload: the model's uint8 (3, H, W) input, and what the prediction log
    records about it (:func:`lensops.monitoring.records.input_columns`)."""

    image: np.ndarray
    facts: dict[str, Any]


def prepare(data: bytes, spec: PreprocessSpec, limits: InputLimits) -> np.ndarray:
    """Check one uploaded image and turn it into the model's uint8 (3, H, W) input."""
    return examine(data, spec, limits).image


def examine(data: bytes, spec: PreprocessSpec, limits: InputLimits) -> Prepared:
    """:func:`prepare`, with the facts the prediction log keeps about the upload."""
    if len(data) > limits.max_bytes:
        raise ApiError("request_too_large", f"image has {len(data)} bytes; the limit is {limits.max_bytes}")
    if spec.bands:
        return _examine_raster(data, spec, limits)
    check, image = load_served_image(data, limits.min_side, limits.max_side, limits.max_pixels)
    if image is None:
        raise ApiError(check.issue.value, check.detail)
    with image:
        pixels = image_to_uint8(image, spec)
    return Prepared(pixels, records.input_columns(data, check, pixels))


def _examine_raster(data: bytes, spec: PreprocessSpec, limits: InputLimits) -> Prepared:
    """:func:`examine` of a raster for a model of ``spec.bands`` (a multi-band GeoTIFF)."""
    check, raster = rasters.check_raster(data, limits.min_side, limits.max_pixels, spec.bands)
    if raster is not None and max(raster.shape) > limits.max_side:
        detail = f"{check.width}x{check.height} exceeds {limits.max_side} px on a side"
        check, raster = check.model_copy(update={"issue": Issue.TOO_LARGE, "detail": detail}), None
    if raster is None:
        raise ApiError(check.issue.value, check.detail)
    pixels = raster_to_uint8(raster.data, rasters.valid_mask(raster), spec)
    return Prepared(pixels, records.input_columns(data, check, pixels))
