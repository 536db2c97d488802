"""Procedural solar-cell images, ``clean`` vs ``dusty``, for fast, offline tests and demos.

Every image is drawn from its own seeded generator, so a dataset is reproducible file by
file. Nuisance factors (cell tint, busbar count and spacing, lighting gradient, rotation,
sensor noise) vary in both classes; only the dust (soft brownish blobs, fine grain and a
haze over the cell) separates them, at a random strength that is sometimes faint. The dust
coverage is also returned as a numeric target for regression.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CLASSES = ("clean", "dusty")


def cell_image(rng: np.random.Generator, size: int, dusty: bool) -> tuple[Image.Image, float]:
    """One cell image and its dust level in [0, 1] (0 for clean cells)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0.12, 0.3) + 0.03 * rng.normal(size=3)
    tint = np.clip(np.array([0.35, 0.45, 0.85]) * base / 0.2, 0.02, 0.9)
    img = np.ones((size, size, 3), np.float32) * tint
    img += _grid(rng, xx, yy)[..., None] * rng.uniform(0.35, 0.6)
    angle = rng.uniform(0, 2 * np.pi)
    img *= (0.75 + 0.5 * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None] * rng.uniform(0.8, 1.2)
    level = 0.0
    if dusty:
        level = float(rng.uniform(0.3, 1.0))
        img = _dust(rng, img, xx, yy, level)
    img += rng.normal(0, rng.uniform(0.01, 0.04), img.shape)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return pil.rotate(rng.uniform(-6, 6), resample=Image.BILINEAR, fillcolor=(10, 10, 20)), level


def _grid(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Busbars (a few thick lines) and fingers (many thin lines) of a cell."""
    bars = rng.integers(2, 5)
    offset = rng.uniform(0.1, 0.25)
    positions = np.linspace(offset, 1 - offset, bars)
    lines = np.zeros_like(xx)
    for p in positions:
        lines = np.maximum(lines, np.exp(-(((xx - p) / 0.012) ** 2)))
    fingers = 0.25 * (np.sin(yy * np.pi * rng.integers(18, 30)) > 0.92)
    return np.maximum(lines, fingers)


def _dust(rng: np.random.Generator, img: np.ndarray, xx: np.ndarray, yy: np.ndarray, level: float) -> np.ndarray:
    colour = np.array([0.55, 0.48, 0.38]) * rng.uniform(0.8, 1.2)
    cover = np.zeros_like(xx)
    for _ in range(int(4 + 10 * level)):
        cx, cy = rng.uniform(0, 1, 2)
        radius = rng.uniform(0.04, 0.15)
        cover += np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)))
    grain = rng.uniform(0, 1, xx.shape) < 0.05 * level
    strength = 0.4 + 0.6 * level
    alpha = np.clip(0.7 * strength * cover + 0.15 * level + 0.5 * grain, 0, 0.9)[..., None]
    return img * (1 - alpha) + colour * alpha


def generate(count_per_class: int, size: int, seed: int) -> list[tuple[str, str, Image.Image, float]]:
    """(class, file name, image, dust level) for ``count_per_class`` cells of each class."""
    items = []
    for label_index, label in enumerate(CLASSES):
        for i in range(count_per_class):
            rng = np.random.default_rng([seed, label_index, i])
            image, level = cell_image(rng, size, dusty=label == "dusty")
            items.append((label, f"{label}_{i:05d}.png", image, level))
    return items
