"""Realistic shifts of images, to measure what the drift checks catch: a darker or brighter
exposure, lower or higher contrast, a lens out of focus, a noisier sensor.

Each shift takes a strength (0: the image unchanged) and a seed (for the noise), so that a
sweep over strengths finds the smallest shift of each kind that a monitor detects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

Shift = Callable[[Image.Image, float, int], Image.Image]


def brightness(image: Image.Image, strength: float, seed: int = 0) -> Image.Image:
    """Exposure scaled by ``1 + strength`` (negative: darker)."""
    return ImageEnhance.Brightness(image).enhance(1 + strength)


def contrast(image: Image.Image, strength: float, seed: int = 0) -> Image.Image:
    """Contrast scaled by ``1 + strength`` (negative: flatter)."""
    return ImageEnhance.Contrast(image).enhance(1 + strength)


def blur(image: Image.Image, strength: float, seed: int = 0) -> Image.Image:
    """A Gaussian blur of radius ``strength`` pixels."""
    return image.filter(ImageFilter.GaussianBlur(strength)) if strength > 0 else image


def noise(image: Image.Image, strength: float, seed: int = 0) -> Image.Image:
    """Gaussian sensor noise with a standard deviation of ``strength`` (0..1 intensity units)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    noisy = pixels + np.random.default_rng(seed).normal(0.0, strength, pixels.shape).astype(np.float32)
    return Image.fromarray((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))


SHIFTS: dict[str, Shift] = {"brightness": brightness, "contrast": contrast, "blur": blur, "noise": noise}


def write_shifted(files: list[Path], root: Path, out: Path, shift: str, strength: float) -> list[Path]:
    """Copies of ``files`` (under ``root``) under ``out``, as PNG, with ``shift`` applied."""
    apply = SHIFTS[shift]
    written = []
    for index, path in enumerate(files):
        target = (out / path.relative_to(root)).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            apply(image.convert("RGB"), strength, index).save(target)
        written.append(target)
    return written
