"""Inspect: read and decode every file of a dataset once, on Ray Data.

Each row gains its content hash, its size and, for a file that fails the image rules
(:func:`lensops.data.images.check_image`), the issue and its detail.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow.fs as pafs

from lensops.config import DataConfig
from lensops.data import storage
from lensops.data.images import Issue, check_image
from lensops.data.reading import map_rows, read_file
from lensops.progress import tracked


def inspect(files: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Adds ``sha256``, ``width``, ``height``, ``issue`` and ``detail`` to every file row."""
    fs, _ = storage.resolve(cfg.source)
    kwargs = {"fs": fs, "min_side": cfg.min_side, "max_pixels": cfg.max_pixels}
    batches = map_rows(files, _inspect_batch, kwargs, cfg).iter_batches(batch_format="pandas", batch_size=None)
    inspected = pd.concat(tracked(batches, len(files), "validating files"), ignore_index=True)
    return inspected.sort_values("path").reset_index(drop=True)


def _inspect_batch(batch: pd.DataFrame, fs: pafs.FileSystem, min_side: int, max_pixels: int) -> pd.DataFrame:
    results = [inspect_bytes(*read_file(fs, uri), min_side, max_pixels) for uri in batch["path"]]
    return pd.concat([batch.reset_index(drop=True), pd.DataFrame(results)], axis=1)


def inspect_bytes(data: bytes | None, error: str, min_side: int, max_pixels: int) -> dict:
    """One file's inspection result: content hash, size and issue (if any)."""
    if data is None:
        return {"sha256": "", "width": 0, "height": 0, "issue": Issue.UNREADABLE.value, "detail": error}
    check = check_image(data, min_side, max_pixels)
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": check.width,
        "height": check.height,
        "issue": check.issue.value if check.issue else None,
        "detail": check.detail,
    }
