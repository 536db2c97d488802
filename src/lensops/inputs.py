"""Input guards for online inference: every bad request becomes a 4xx with a reason code.

Image acceptance reuses :func:`lensops.validation.check_image`, the same rule that decides
which training files are skipped, so the service never accepts what training would reject.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from pydantic import BaseModel

from lensops.config import ServeConfig
from lensops.preprocess import PreprocessSpec, to_uint8
from lensops.validation import Issue, check_image

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"})

STATUS = {
    "missing_field": 400,
    "invalid_base64": 400,
    "invalid_json": 400,
    "request_too_large": 413,
    "too_many_images": 413,
    "model_unavailable": 503,
    "unsupported_media_type": 415,
    Issue.NOT_IMAGE.value: 415,
    "unsupported_format": 415,
    Issue.UNREADABLE.value: 422,
    Issue.TRUNCATED.value: 422,
    Issue.TOO_SMALL.value: 422,
    Issue.TOO_LARGE.value: 413,
}


class InputLimits(BaseModel):
    max_bytes: int
    min_side: int
    max_side: int
    max_pixels: int

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> InputLimits:
        return cls(
            max_bytes=cfg.max_request_bytes, min_side=cfg.min_side, max_side=cfg.max_side, max_pixels=cfg.max_pixels
        )


class InputError(Exception):
    """A rejected input: ``reason`` is a stable code, ``message`` says what to fix."""

    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)  # both in args, so the error pickles across Ray
        self.reason = reason
        self.message = message

    @property
    def status(self) -> int:
        return STATUS.get(self.reason, 400)

    def body(self) -> dict[str, str]:
        return {"error": self.reason, "detail": self.message}


def decode_base64(text: object) -> bytes:
    if not isinstance(text, str) or not text:
        raise InputError("missing_field", "expected a non-empty base64 string")
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("invalid_base64", f"image is not valid base64: {exc}") from None


def prepare(data: bytes, spec: PreprocessSpec, limits: InputLimits) -> np.ndarray:
    """Check one uploaded image and turn it into the model's uint8 (3, H, W) input."""
    if len(data) > limits.max_bytes:
        raise InputError("request_too_large", f"image has {len(data)} bytes; the limit is {limits.max_bytes}")
    check = check_image(data, limits.min_side, limits.max_pixels)
    if check.issue is not None:
        raise InputError(check.issue.value, check.detail)
    if max(check.width, check.height) > limits.max_side:
        raise InputError(Issue.TOO_LARGE.value, f"{check.width}x{check.height} exceeds {limits.max_side} px on a side")
    fmt = check.format
    if fmt not in ALLOWED_FORMATS:
        raise InputError(
            "unsupported_format", f"{fmt} images are not accepted; use {', '.join(sorted(ALLOWED_FORMATS))}"
        )
    return to_uint8(data, spec)
