"""The data stage as one chain: read -> inspect -> validate -> split -> write.

:func:`build_catalog` is the whole stage; each step is a module of this package. A catalog
is a table, one row per usable image: ``path`` (a local path or ``s3://`` URI), ``label``,
``label_index``, ``sha256``, ``width``, ``height``, ``split`` and any extra manifest columns.
It is written as Parquet beside its validation report, so every later stage can name exactly
which files it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lensops.config import DataConfig
from lensops.data.inspection import inspect
from lensops.data.sources import list_files, read_licence
from lensops.data.splits import assign_splits, counts_per_split, dataset_version
from lensops.data.validation import ValidationReport, validate


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


def build_catalog(cfg: DataConfig) -> Catalog:
    """Read, inspect, validate and split a dataset; bad files go to the report, not the table."""
    files = list_files(cfg.source)
    inspected = inspect(files, cfg)
    kept, skipped = validate(inspected, cfg)
    classes = sorted(inspected["label"].astype(str).unique())
    kept = kept.assign(
        label_index=kept["label"].map({c: i for i, c in enumerate(classes)}).astype("int64"),
        split=assign_splits(kept["sha256"], cfg.split),
    )
    version = dataset_version(kept, cfg.target_column)
    report = ValidationReport(
        source=cfg.source,
        dataset_version=version,
        total_files=len(inspected),
        kept_files=len(kept),
        classes=classes,
        class_counts=counts_per_split(kept, classes),
        skipped=skipped,
        licence=cfg.licence or read_licence(cfg.source),
    )
    return Catalog(source=cfg.source, version=version, classes=classes, table=kept, report=report)
