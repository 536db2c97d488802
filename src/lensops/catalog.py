"""The dataset catalog: list files, inspect them with Ray Data, version and split what is kept.

A catalog is a table, one row per usable image: ``path`` (a local path or ``s3://`` URI),
``label``, ``label_index``, ``sha256``, ``width``, ``height``, ``split`` and any extra
manifest columns (e.g. a regression target). It is written as Parquet next to its
validation report so every later stage can name exactly which files it used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import ray

from lensops import storage
from lensops.config import DataConfig, SplitConfig
from lensops.validation import (
    ValidationReport,
    flag_duplicates,
    inspect_bytes,
    require_min_per_class,
    skipped_files,
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Catalog:
    source: str
    version: str
    classes: list[str]
    table: pd.DataFrame
    report: ValidationReport

    def split(self, name: str) -> pd.DataFrame:
        return self.table[self.table["split"] == name].reset_index(drop=True)

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.parquet`` and ``validation.json`` under ``directory/<version>``."""
        out = Path(directory) / self.version
        out.mkdir(parents=True, exist_ok=True)
        self.table.to_parquet(out / "manifest.parquet", index=False)
        self.report.write(out / "validation.json")
        return out


def list_files(source: str) -> pd.DataFrame:
    """Rows of (path, label, extra manifest columns) for a folder tree or a manifest.csv."""
    fs, root = storage.resolve(source)
    if root.endswith(".csv"):
        return _read_manifest(fs, root)
    return _scan_folder(fs, root)


def _scan_folder(fs: pafs.FileSystem, root: str) -> pd.DataFrame:
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no image folder at {storage.to_uri(fs, root)}")
    rows = []
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = entry.path[len(root) :].strip("/").split("/")
        hidden = any(part.startswith(".") for part in relative)
        if entry.type == pafs.FileType.File and len(relative) >= 2 and not hidden:
            rows.append({"path": storage.to_uri(fs, entry.path), "label": relative[0]})
    if not rows:
        raise FileNotFoundError(f"no images under {storage.to_uri(fs, root)}: expected <root>/<class>/<image>")
    return pd.DataFrame(rows)


def _read_manifest(fs: pafs.FileSystem, path: str) -> pd.DataFrame:
    with fs.open_input_stream(path) as stream:
        table = pd.read_csv(stream)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: manifest needs columns path,label; missing {sorted(missing)}")
    base = storage.to_uri(fs, path.rsplit("/", 1)[0])
    table["path"] = [p if _is_absolute(p) else storage.join(base, p) for p in table["path"]]
    table["label"] = table["label"].astype(str)
    return table


def _is_absolute(path: str) -> bool:
    return storage.is_s3(path) or path.startswith("/")


def map_table(table: pd.DataFrame, fn: Callable, fn_kwargs: dict[str, Any], cfg: DataConfig) -> ray.data.Dataset:
    """A lazy Ray dataset applying ``fn`` to blocks of ``cfg.decode_batch_size`` table rows,
    in at most ``cfg.decode_concurrency`` parallel tasks; ``fn`` does the file I/O itself, so
    an unreadable file becomes a reported row instead of a failed read task."""
    step = cfg.decode_batch_size
    blocks = [table.iloc[i : i + step] for i in range(0, len(table), step)]
    dataset = ray.data.from_pandas(blocks).map_batches(
        fn,
        fn_kwargs=fn_kwargs,
        batch_format="pandas",
        batch_size=None,
        compute=ray.data.TaskPoolStrategy(size=cfg.decode_concurrency),
    )
    # Reservation splits CPUs between operators so that one cannot starve another; this plan
    # has one operator, and the reserve only left decoders idle (about 0.6x the img/s of
    # benchmarks/ingest.py). Only this dataset's own context copy changes.
    dataset.context.op_resource_reservation_enabled = False
    return dataset


def inspect(files: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Read and decode every file once on Ray Data; adds sha256, size, issue and detail."""
    fs, _ = storage.resolve(cfg.source)
    kwargs = {"fs": fs, "min_side": cfg.min_side, "max_pixels": cfg.max_pixels}
    inspected = map_table(files, _inspect_batch, kwargs, cfg).to_pandas()
    return inspected.sort_values("path").reset_index(drop=True)


def _inspect_batch(batch: pd.DataFrame, fs: pafs.FileSystem, min_side: int, max_pixels: int) -> pd.DataFrame:
    results = []
    for uri in batch["path"]:
        data, error = _try_read(fs, uri)
        results.append(inspect_bytes(data, error, min_side, max_pixels))
    return pd.concat([batch.reset_index(drop=True), pd.DataFrame(results)], axis=1)


def _try_read(fs: pafs.FileSystem, uri: str) -> tuple[bytes | None, str]:
    try:
        return storage.read_bytes(fs, storage.fs_path(uri)), ""
    except OSError as exc:
        return None, f"cannot read: {exc}"


def dataset_version(kept: pd.DataFrame, target_column: str | None = None) -> str:
    """Content hash over (label, file bytes hash[, target]): names the data, not its paths."""
    targets = kept[target_column].astype(str) if target_column else pd.Series("", index=kept.index)
    lines = sorted(f"{lab}\t{sha}\t{t}" for lab, sha, t in zip(kept["label"], kept["sha256"], targets, strict=True))
    return "ds-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def assign_splits(sha256: pd.Series, cfg: SplitConfig) -> pd.Series:
    """Split each file by a hash of its content: stable when files are added or removed.

    Every class is split by the same rule, so each is stratified in expectation; with the
    seed fixed, a given image always lands in the same split.
    """
    draws = np.array([_unit_interval(f"{cfg.seed}:{sha}") for sha in sha256])
    names = np.where(draws < cfg.train, "train", np.where(draws < cfg.train + cfg.val, "val", "test"))
    return pd.Series(names, index=sha256.index)


def _unit_interval(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) / 16**15


def build_catalog(cfg: DataConfig) -> Catalog:
    """List, inspect, de-duplicate, version and split a dataset; bad files go to the report."""
    files = flag_duplicates(inspect(list_files(cfg.source), cfg))
    kept = files[files["issue"].isna()].drop(columns=["issue", "detail"])
    if cfg.target_column and cfg.target_column not in kept.columns:
        raise ValueError(f"target column '{cfg.target_column}' is not in the manifest of {cfg.source}")
    classes = sorted(files["label"].astype(str).unique())
    require_min_per_class(kept, classes, cfg.min_images_per_class)
    kept = kept.assign(
        label_index=kept["label"].map({c: i for i, c in enumerate(classes)}).astype("int64"),
        split=assign_splits(kept["sha256"], cfg.split),
    ).reset_index(drop=True)
    version = dataset_version(kept, cfg.target_column)
    report = ValidationReport(
        source=cfg.source,
        dataset_version=version,
        total_files=len(files),
        kept_files=len(kept),
        classes=classes,
        class_counts={s: _counts(kept[kept["split"] == s], classes) for s in SPLITS},
        skipped=skipped_files(files),
    )
    return Catalog(source=cfg.source, version=version, classes=classes, table=kept, report=report)


def _counts(rows: pd.DataFrame, classes: list[str]) -> dict[str, int]:
    counts = rows["label"].value_counts()
    return {c: int(counts.get(c, 0)) for c in classes}
