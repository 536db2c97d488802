"""Step 1 of batch scoring (:mod:`lensops.scoring.batch`): read, hash and check each file with
the service's image rules, and decode it with the model's own preprocessing spec.

It runs in Ray Data's CPU tasks, which unpickle it by this module's name: nothing here imports
torch or MLflow, so those tasks never pay their import.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from lensops.data.images import Issue, load_served_image
from lensops.data.reading import read_file
from lensops.model.preprocess import PreprocessSpec, image_to_uint8
from lensops.monitoring import records
from lensops.scoring import parts

FILE_COLUMNS = ("path", "folder", "content_hash", "status", "reason", "detail", "input_format")
SIZE_COLUMNS = ("input_width", "input_height")


@dataclass(frozen=True)
class ImageRules:
    """The service's limits on one image (``serve.min_side``, ``max_side``, ``max_pixels``)."""

    min_side: int
    max_side: int
    max_pixels: int


def read_and_check(
    batch: pd.DataFrame, fs: pafs.FileSystem, spec: PreprocessSpec, rules: ImageRules, done: set[str]
) -> dict[str, np.ndarray]:
    """A block of listed files, read, hashed and checked: their file columns and model inputs
    (the files the output holds already for this version are left out)."""
    rows, images = [], []
    for path, folder in zip(batch["path"], batch["folder"], strict=True):
        data, error = read_file(fs, path)
        digest = hashlib.sha256(data).hexdigest() if data is not None else ""
        if parts.key(path, digest) in done:
            continue
        row, image = _check(data, error, spec, rules)
        rows.append({"path": path, "folder": folder, "content_hash": digest, **row})
        images.append(image)
    side = spec.image_size
    columns = {name: np.array([r[name] for r in rows], dtype=object) for name in FILE_COLUMNS}
    sizes = {name: np.array([r[name] for r in rows], dtype=np.int32) for name in SIZE_COLUMNS}
    pixels = np.stack(images) if images else np.zeros((0, 3, side, side), np.uint8)
    return {**columns, **sizes, "image": pixels}


def _check(
    data: bytes | None, error: str, spec: PreprocessSpec, rules: ImageRules
) -> tuple[dict[str, Any], np.ndarray]:
    """The file columns of one file and its model input (zeros when it is rejected)."""
    blank = np.zeros((3, spec.image_size, spec.image_size), np.uint8)
    if data is None:
        return _rejected(Issue.UNREADABLE, error), blank
    check, image = load_served_image(data, rules.min_side, rules.max_side, rules.max_pixels)
    facts = {"input_format": check.format, "input_width": check.width, "input_height": check.height}
    if image is None:
        return {**_rejected(check.issue, check.detail), **facts}, blank
    with image:
        return {"status": records.OK, "reason": "", "detail": "", **facts}, image_to_uint8(image, spec)


def _rejected(issue: Issue, detail: str) -> dict[str, Any]:
    unknown = {"input_format": "", "input_width": 0, "input_height": 0}
    return {"status": records.REJECTED, "reason": issue.value, "detail": detail, **unknown}
