"""Small things tests of both tiers build: encoded images, crafted PNGs, model specs."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

from lensops.config import ModelConfig
from lensops.model.artifact import ModelSpec
from lensops.model.preprocess import PreprocessSpec


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels but carries almost no data
    (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def model_spec(task: str = "classification", classes: list[str] | None = None, **model: Any) -> ModelSpec:
    """A spec at 32 px with 0.5/0.5 normalisation; ``model`` sets ModelConfig fields (default resnet18)."""
    return ModelSpec(
        model=ModelConfig(**{"architecture": "resnet18", "task": task, **model}),
        classes=["a", "b"] if classes is None else classes,
        target_column="value" if task == "regression" else None,
        preprocess=PreprocessSpec(image_size=32, resize_size=32, mean=(0.5,) * 3, std=(0.5,) * 3),
        dataset_version="ds-x",
        data_source="x",
        config={},
        git_commit="x",
    )
