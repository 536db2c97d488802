"""Binary masks in answers: PNG in base64 on the wire, connected regions, and overlap."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

CHANGE_CLASSES = ("unchanged", "changed")
"""A tile is ``changed`` when any of its pixels is: its label in the catalog and in answers."""


def change_class(mask: np.ndarray) -> str:
    """The :data:`CHANGE_CLASSES` label of a tile with this (H, W) change mask."""
    return CHANGE_CLASSES[int(mask.any())]


def to_png(mask: np.ndarray) -> str:
    """A boolean (H, W) mask as a base64 PNG, 0 and 255 in one 8-bit channel."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def from_png(text: str) -> np.ndarray:
    """The boolean mask of :func:`to_png`'s text."""
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image.convert("L")) >= 128


def regions(mask: np.ndarray) -> list[dict[str, int | list[int]]]:
    """The 8-connected regions of a boolean mask, largest first: ``box`` as [x0, y0, x1, y1]
    (x1 and y1 exclusive) and ``area`` in pixels."""
    from scipy import ndimage  # here: the torch side of lensops runs where only PyTorch is

    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    areas = ndimage.sum_labels(mask, labelled, index=np.arange(1, count + 1))
    found = [
        {"box": [rows_cols[1].start, rows_cols[0].start, rows_cols[1].stop, rows_cols[0].stop], "area": int(area)}
        for rows_cols, area in zip(ndimage.find_objects(labelled), areas, strict=True)
    ]
    return sorted(found, key=lambda region: -region["area"])


def iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1 when both are empty."""
    union = np.logical_or(first, second).sum()
    return float(np.logical_and(first, second).sum() / union) if union else 1.0
