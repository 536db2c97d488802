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
