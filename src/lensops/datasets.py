"""Ray Data pipelines from a catalog: stream, decode and resize images as uint8, per split.

Each dataset yields batches ``{"image": uint8 (N, 3, H, W), "target": int64 | float32 (N,)}``.
Ray Train hands each worker its own shard (``ray.train.get_dataset_shard``); normalisation
happens on the worker's device, so float32 never crosses a process boundary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import ray
import torch

from lensops import storage
from lensops.artifact import ChannelStats
from lensops.catalog import SPLITS, Catalog, map_table
from lensops.config import AugmentConfig, DataConfig
from lensops.preprocess import PreprocessSpec, augmentation, to_uint8
from lensops.validation import DataValidationError


def target_values(rows: pd.DataFrame, target_column: str | None) -> np.ndarray:
    """Class indices for classification, the numeric column for regression."""
    if target_column:
        return rows[target_column].to_numpy(dtype=np.float32)
    return rows["label_index"].to_numpy(dtype=np.int64)


def image_dataset(rows: pd.DataFrame, spec: PreprocessSpec, cfg: DataConfig, fs: pafs.FileSystem) -> ray.data.Dataset:
    """A lazy dataset of decoded, resized uint8 images with their targets."""
    table = pd.DataFrame({"path": rows["path"], "target": target_values(rows, cfg.target_column)})
    # Catalog rows are sorted by path, i.e. grouped by class: mix them so every block holds
    # every class, and a per-epoch block-order shuffle plus the local buffer suffice.
    mixed = table.sample(frac=1.0, random_state=cfg.split.seed)
    return map_table(mixed, _load_batch, {"fs": fs, "spec": spec}, cfg)


def _load_batch(batch: pd.DataFrame, fs: pafs.FileSystem, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    images = [to_uint8(storage.read_bytes(fs, storage.fs_path(p)), spec) for p in batch["path"]]
    return {"image": np.stack(images), "target": batch["target"].to_numpy()}


def augmented(ds: ray.data.Dataset, cfg: AugmentConfig) -> ray.data.Dataset:
    """Training view of ``ds``: a new block order and new random augmentations every epoch."""
    return ds.randomize_block_order().map_batches(_augment_batch, fn_kwargs={"cfg": cfg}, batch_format="numpy")


def _augment_batch(batch: dict[str, np.ndarray], cfg: AugmentConfig) -> dict[str, np.ndarray]:
    transform = augmentation(cfg)
    images = [transform(torch.from_numpy(img)).numpy() for img in batch["image"]]
    return {"image": np.stack(images), "target": batch["target"]}


def split_datasets(
    catalog: Catalog, spec: PreprocessSpec, cfg: DataConfig, splits: tuple[str, ...] = SPLITS
) -> dict[str, ray.data.Dataset]:
    """Un-augmented datasets per split; decoded once and cached when ``cfg.cache_decoded``."""
    fs, _ = storage.resolve(catalog.source)
    datasets = {}
    for name in splits:
        rows = catalog.split(name)
        if rows.empty:
            raise DataValidationError(f"the {name} split of {catalog.source} is empty: add images")
        ds = image_dataset(rows, spec, cfg, fs)
        datasets[name] = ds.materialize() if cfg.cache_decoded else ds
    return datasets


def channel_stats(ds: ray.data.Dataset) -> ChannelStats:
    """Per-channel mean and std (0..1 units) over every pixel of a uint8 image dataset."""
    sums = np.zeros(3)
    squares = np.zeros(3)
    pixels = 0
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        images = batch["image"].astype(np.float64) / 255.0
        sums += images.sum(axis=(0, 2, 3))
        squares += (images**2).sum(axis=(0, 2, 3))
        pixels += images.shape[0] * images.shape[2] * images.shape[3]
    mean = sums / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    return ChannelStats(mean=tuple(mean), std=tuple(std), pixels=pixels)
