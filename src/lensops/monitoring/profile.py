"""The reference profile of a model version's training data, stored in its spec.

Today it holds per-channel pixel statistics of the training split (``ModelSpec.baseline``).
"""

from __future__ import annotations

import numpy as np
import ray

from lensops.model.artifact import ChannelStats


def channel_stats(ds: ray.data.Dataset, column: str = "image") -> ChannelStats:
    """Per-channel mean and std (0..1 units) over every pixel of a uint8 image column."""
    sums = np.zeros(3)
    squares = np.zeros(3)
    pixels = 0
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        images = batch[column].astype(np.float64) / 255.0
        sums += images.sum(axis=(0, 2, 3))
        squares += (images**2).sum(axis=(0, 2, 3))
        pixels += images.shape[0] * images.shape[2] * images.shape[3]
    mean = sums / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    return ChannelStats(mean=tuple(mean), std=tuple(std), pixels=pixels)
