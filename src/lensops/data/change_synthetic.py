"""Procedural before/after scenes of land cover with a change mask, for change-detection tests and demos.

A scene is a land-cover map (forest, fields in parcels, water, roads) rendered twice, as
reflectance in four bands (red, green, blue, near-infrared, like Sentinel-2's B4, B3, B2, B8).
Between the two dates some things change and are marked in the mask: forest cleared to bare
soil, a new road, new buildings. Others differ too and are *not* change: each field parcel
moves through its season (green, ripe, harvested) independently, the forest's colour turns,
and illumination, haze and sensor noise differ. A detector that only thresholds the difference
of the two dates flags the harvests and the light; one that learned what change looks like
does not.

Every scene comes from its own seeded generator, so a dataset is reproducible scene by scene,
and data for testing can come from other seeds than data for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BANDS = ("red", "green", "blue", "nir")
SENTINEL2_BANDS = ("B4", "B3", "B2", "B8")
"""Sentinel-2's names of :data:`BANDS`, the band descriptions of generated GeoTIFFs."""
FOREST, FIELD, WATER, ROAD, SOIL, ROOF = range(6)
COLOURS = {  # reflectance per band, R G B NIR
    WATER: (0.03, 0.05, 0.08, 0.01),
    ROAD: (0.30, 0.30, 0.29, 0.25),
    SOIL: (0.27, 0.20, 0.13, 0.22),
    ROOF: (0.45, 0.30, 0.25, 0.30),
}
FOREST_SEASONS = ((0.05, 0.10, 0.04, 0.36), (0.09, 0.09, 0.04, 0.27))
"""Summer and autumn canopy."""
FIELD_SEASONS = ((0.08, 0.17, 0.06, 0.45), (0.26, 0.23, 0.12, 0.30), (0.21, 0.16, 0.11, 0.20))
"""Green, ripe and harvested (ploughed) crops: what a parcel looks like changes with no change."""
DISPLAY_GAIN = 2.5
"""Reflectance -> display brightness for 8-bit images (the usual true-colour stretch)."""


@dataclass(frozen=True)
class ScenePair:
    before: np.ndarray
    """Reflectance (4, H, W) float32, bands as in :data:`BANDS`."""
    after: np.ndarray
    mask: np.ndarray
    """(H, W) bool: where the land cover changed."""


def scene_pair(rng: np.random.Generator, size: int) -> ScenePair:
    """One scene of ``size`` x ``size`` pixels at two dates, and where it changed."""
    cover, parcels = _land_cover(rng, size)
    changed_cover = _changes(rng, cover)
    seasons = len(FIELD_SEASONS)
    before = _render(rng, cover, parcels, rng.integers(0, seasons, parcels.max() + 1), 0)
    after = _render(rng, changed_cover, parcels, rng.integers(0, seasons, parcels.max() + 1), 1)
    return ScenePair(before, after, changed_cover != cover)


def to_uint8(reflectance: np.ndarray, bands: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """True-colour 8-bit pixels (H, W, len(bands)) of a reflectance image."""
    return (np.clip(reflectance[list(bands)] * DISPLAY_GAIN, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


def _field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth noise with zero mean and unit spread: terrain, forest density, ..."""
    noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma, mode="wrap")
    return (noise - noise.mean()) / (noise.std() + 1e-9)


def _land_cover(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(cover class per pixel, field parcel id per pixel)."""
    parcels = _parcels(rng, size)
    cover = np.full((size, size), FIELD, np.int8)
    cover[_field(rng, size, size / 10) > rng.uniform(-0.6, 0.6)] = FOREST
    cover[_field(rng, size, size / 8) < rng.uniform(-2.4, -1.2)] = WATER
    for _ in range(rng.integers(0, 3)):
        cover[_road(rng, size)] = ROAD
    return cover, parcels


def _parcels(rng: np.random.Generator, size: int) -> np.ndarray:
    """Field parcels: a grid of randomly sized cells, each with its own id."""
    edges = [np.unique(np.concatenate([[0], np.cumsum(rng.integers(size // 10, size // 4, 12))])) for _ in range(2)]
    rows, cols = (np.searchsorted(e, np.arange(size), side="right") for e in edges)
    return rows[:, None] * (len(edges[1]) + 1) + cols[None, :]


def _road(rng: np.random.Generator, size: int) -> np.ndarray:
    """A straight road crossing the scene, 2 to 4 pixels wide."""
    yy, xx = np.mgrid[0:size, 0:size]
    angle, offset = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8) * size
    distance = np.abs((xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle) + offset - size / 2)
    return distance < rng.uniform(1.0, 2.0)


def _changes(rng: np.random.Generator, cover: np.ndarray) -> np.ndarray:
    """The land cover at the second date: clearings, maybe a new road, maybe new buildings."""
    size = cover.shape[0]
    after = cover.copy()
    for _ in range(rng.integers(1, 5)):
        after[_clearing(rng, size) & (cover == FOREST)] = SOIL
    if rng.uniform() < 0.5:
        after[_road(rng, size) & (cover != WATER)] = ROAD
    for _ in range(rng.integers(0, 7)):
        y, x = rng.integers(0, size - 10, 2)
        h, w = rng.integers(4, 10, 2)
        block = (slice(y, y + h), slice(x, x + w))
        after[block] = np.where(cover[block] == FIELD, ROOF, after[block])
    return after


def _clearing(rng: np.random.Generator, size: int) -> np.ndarray:
    """An irregular blob: an ellipse with a ragged edge."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0, size, 2)
    ry, rx = rng.uniform(0.03, 0.09, 2) * size
    radius = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    return radius + 0.3 * _field(rng, size, 2.0) < 1.0


def _render(
    rng: np.random.Generator, cover: np.ndarray, parcels: np.ndarray, field_season: np.ndarray, date: int
) -> np.ndarray:
    """Reflectance of a land-cover map on one date, with its light, haze and noise."""
    size = cover.shape[0]
    image = np.zeros((4, size, size), np.float32)
    forest = np.asarray(FOREST_SEASONS[date if rng.uniform() < 0.5 else 0], np.float32)
    canopy = 1 + 0.25 * _field(rng, size, 1.0)  # tree crowns
    image += (cover == FOREST) * canopy * forest[:, None, None]
    crop = np.asarray(FIELD_SEASONS, np.float32)[field_season[parcels]].transpose(2, 0, 1)
    image += (cover == FIELD) * crop * _furrows(rng, parcels)
    for kind, colour in COLOURS.items():
        texture = 1 + 0.08 * rng.normal(size=(size, size))
        image += (cover == kind) * texture * np.asarray(colour, np.float32)[:, None, None]
    return _atmosphere(rng, image)


def _furrows(rng: np.random.Generator, parcels: np.ndarray) -> np.ndarray:
    """Brightness stripes along each parcel's own direction."""
    size = parcels.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    angles = rng.uniform(0, np.pi, parcels.max() + 1)[parcels]
    periods = rng.uniform(3, 7, parcels.max() + 1)[parcels]
    return 1 + 0.12 * np.sin(2 * np.pi * (xx * np.cos(angles) + yy * np.sin(angles)) / periods)


def _atmosphere(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sun and sensor: a gain with a gentle gradient, an additive haze and noise."""
    size = image.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.8, 1.2) * (1 + 0.15 * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5))
    haze = rng.uniform(0.0, 0.04) * np.array([1.0, 0.9, 1.1, 0.5], np.float32)[:, None, None]
    noise = rng.normal(0, 0.006, image.shape)
    return (image * gain + haze + noise).clip(0, 1).astype(np.float32)
