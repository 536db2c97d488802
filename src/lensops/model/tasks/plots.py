"""Figures that task reports put into a tracking run (matplotlib, drawn off-screen)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]) -> Figure:
    size = 1.2 + 0.6 * len(classes)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    return fig


def residual_figure(targets: np.ndarray, predictions: np.ndarray) -> Figure:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.scatter(targets, predictions - targets, s=8, alpha=0.6)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set(xlabel="target", ylabel="prediction - target", title="residuals")
    fig.tight_layout()
    return fig


def change_figure(before: np.ndarray, after: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> Figure:
    """One row per tile: the two dates (uint8, (N, C, H, W); the first three channels shown as
    RGB, which for bands ``B4, B3, B2, B8`` is true colour), the true mask and the predicted mask
    (boolean, (N, H, W)), each mask drawn in red over the after image."""
    before, after, rows = before[:, :3], after[:, :3], len(before)
    fig = Figure(figsize=(8, 2.1 * rows))
    axes = fig.subplots(rows, 4, squeeze=False)
    for row, images in enumerate(zip(before, after, truth, predicted, strict=True)):
        tiles = [images[0].transpose(1, 2, 0), images[1].transpose(1, 2, 0)]
        tiles += [_masked(images[1], mask) for mask in images[2:]]
        for ax, tile, title in zip(axes[row], tiles, ("before", "after", "true change", "predicted"), strict=True):
            ax.imshow(tile)
            ax.set_title(title if row == 0 else "", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig


def _masked(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (3, H, W) with ``mask`` blended in red, as (H, W, 3)."""
    shown = image.transpose(1, 2, 0).astype(np.float32)
    shown[mask] = 0.4 * shown[mask] + 0.6 * np.array([255.0, 0.0, 0.0])
    return shown.astype(np.uint8)
