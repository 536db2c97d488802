"""Ray Data pipelines from a catalog: stream, decode and resize images as uint8, per split.

Each dataset yields batches with one uint8 array (N, 3, H, W) per task input (``image`` for
one-image tasks) and ``target``, built by the task from the catalog rows. Ray Train hands each
worker its own shard (``ray.train.get_dataset_shard``); normalisation happens on the worker's
device, so float32 never crosses a process boundary.

Nothing here imports torch at load time: the Ray Data and Ray Train coordinators unpickle these
functions without calling them (see :mod:`lensops.model.preprocess`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import ray

from lensops.config import AugmentConfig, DataConfig
from lensops.data import storage
from lensops.data.catalog import Catalog
from lensops.data.reading import map_rows
from lensops.data.splits import SPLITS
from lensops.data.validation import DataValidationError
from lensops.model.preprocess import BandStats, PreprocessSpec, augmentation, band_stats, mask_to_uint8, to_uint8

if TYPE_CHECKING:
    import torch

    from lensops.model.tasks import Task


def source_column(input_name: str) -> str:
    """The catalog column holding the files of a task input (``path`` for a single image)."""
    return "path" if input_name == "image" else input_name


def image_dataset(
    rows: pd.DataFrame, task: Task, spec: PreprocessSpec, cfg: DataConfig, fs: pafs.FileSystem
) -> ray.data.Dataset:
    """A lazy dataset of decoded, resized uint8 images with their targets (a task's mask read
    from its file, the others from the catalog rows)."""
    table = pd.DataFrame({name: rows[source_column(name)] for name in task.inputs})
    table["target"] = task.targets(rows, cfg.target_column)
    # Catalog rows are sorted by path, i.e. grouped by class: mix them so every block holds
    # every class, and a per-epoch block-order shuffle plus the local buffer suffice.
    mixed = table.sample(frac=1.0, random_state=cfg.split.seed)
    kwargs = {"fs": fs, "spec": spec, "inputs": task.inputs, "mask": task.target_image is not None}
    return map_rows(mixed, _load_batch, kwargs, cfg)


def _load_batch(
    batch: pd.DataFrame, fs: pafs.FileSystem, spec: PreprocessSpec, inputs: tuple[str, ...], mask: bool
) -> dict[str, np.ndarray]:
    def read(uri: str) -> bytes:
        return storage.read_bytes(fs, storage.fs_path(uri))

    loaded = {name: np.stack([to_uint8(read(p), spec) for p in batch[name]]) for name in inputs}
    targets = batch["target"].to_numpy()
    if mask:
        targets = np.stack([mask_to_uint8(read(p), spec) for p in targets])
    return {**loaded, "target": targets}


BAND_STATS_EXAMPLES = 64
"""Training examples whose rasters the band statistics are computed from (an even sample)."""


def training_band_stats(catalog: Catalog, task: Task, bands: list[str]) -> BandStats:
    """The band statistics (:func:`lensops.model.preprocess.band_stats`) of the inputs of up to
    :data:`BAND_STATS_EXAMPLES` training examples: the ranges and normalisation saved in the spec."""
    from lensops.data import rasters  # rasterio, only where rasters are read

    fs, _ = storage.resolve(catalog.source)
    train = catalog.split("train")
    sample = train.iloc[:: max(1, len(train) // BAND_STATS_EXAMPLES)]
    uris = [uri for name in task.inputs for uri in sample[source_column(name)]]
    read = (rasters.read_bytes(storage.read_bytes(fs, storage.fs_path(uri)), bands, uri) for uri in uris)
    return band_stats((raster.data, rasters.valid_mask(raster)) for raster in read)


def augmented(ds: ray.data.Dataset, task: Task, cfg: AugmentConfig) -> ray.data.Dataset:
    """Training view of ``ds``: a new block order and new random augmentations every epoch.

    The inputs of one example go through one draw of the random transforms together, so a
    pair of images keeps its alignment; a mask target goes through the same draw, moved by the
    geometric transforms only."""
    kwargs = {"cfg": cfg, "inputs": task.inputs, "mask": task.target_image is not None}
    return ds.randomize_block_order().map_batches(_augment_batch, fn_kwargs=kwargs, batch_format="numpy")


def _augment_batch(
    batch: dict[str, np.ndarray], cfg: AugmentConfig, inputs: tuple[str, ...], mask: bool
) -> dict[str, np.ndarray]:
    import torch
    from torchvision import tv_tensors

    transform = augmentation(cfg)
    names = (*inputs, "target") if mask else inputs
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in range(len(batch["target"])):
        # typed, because v2 transforms only the first of several plain tensors
        example = [tv_tensors.Image(torch.from_numpy(batch[name][i])) for name in inputs]
        if mask:
            example.append(tv_tensors.Mask(torch.from_numpy(batch["target"][i])))
        for name, tensor in zip(names, _as_tuple(transform(*example)), strict=True):
            out[name].append(tensor.numpy())
    return {"target": batch["target"], **{name: np.stack(arrays) for name, arrays in out.items()}}


def _as_tuple(result: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def split_datasets(
    catalog: Catalog, task: Task, spec: PreprocessSpec, cfg: DataConfig, splits: tuple[str, ...] = SPLITS
) -> dict[str, ray.data.Dataset]:
    """Un-augmented datasets per split; decoded once and cached when ``cfg.cache_decoded``."""
    fs, _ = storage.resolve(catalog.source)
    datasets = {}
    for name in splits:
        rows = catalog.split(name)
        if rows.empty:
            raise DataValidationError(f"the {name} split of {catalog.source} is empty: add images")
        ds = image_dataset(rows, task, spec, cfg, fs)
        datasets[name] = ds.materialize() if cfg.cache_decoded else ds
    return datasets
