"""The non-learned change detector a trained model must beat: per-pixel difference of the two
dates, thresholded by Otsu's method (the threshold that best separates the difference values
into two groups)."""

from __future__ import annotations

import numpy as np


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-group variance of ``values``."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:][np.argmax(between)])


def difference_masks(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Boolean change masks (N, H, W) of uint8 image pairs (N, C, H, W): the per-pixel Euclidean
    distance across channels, thresholded by Otsu's method over the whole set of pairs."""
    distance = np.linalg.norm(after.astype(np.float32) - before.astype(np.float32), axis=1)
    return distance > otsu_threshold(distance)
