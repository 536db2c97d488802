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
from typing import TYPE_CHECKING

import pandas as pd

from lensops.config import DataConfig
from lensops.data.inspection import inspect
from lensops.data.pairs import inspect_examples, list_examples
from lensops.data.sources import list_files, read_licence
from lensops.data.splits import assign_splits, counts_per_split, dataset_version, split_keys
from lensops.data.validation import ValidationReport, validate

if TYPE_CHECKING:
    from lensops.model.tasks import Task

SINGLE_IMAGE = ("image",)


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


def build_catalog(cfg: DataConfig, task: Task | None = None) -> Catalog:
    """Read, inspect, validate and split a dataset; bad files go to the report, not the table.

    ``task`` says which files make one example: one image (the default, and every task whose
    :attr:`~lensops.model.tasks.Task.inputs` are one image with a target in the catalog), or
    several files read together (:mod:`lensops.data.pairs`)."""
    names = example_files(task) if task else SINGLE_IMAGE
    if names == SINGLE_IMAGE:
        inspected = inspect(list_files(cfg.source), cfg)
        kept, skipped = validate(inspected, cfg)
        labelled = inspected  # a class whose every file was skipped still names itself
    else:
        inspected = inspect_examples(list_examples(cfg.source, names), names, cfg)
        kept, skipped = validate(inspected, cfg, min_per_class=False)
        labelled = kept  # a skipped example has no label
    classes = sorted(labelled["label"].astype(str).unique())
    kept = kept.assign(
        label_index=kept["label"].map({c: i for i, c in enumerate(classes)}).astype("int64"),
        split=assign_splits(split_keys(kept), cfg.split),
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


def example_files(task: Task) -> tuple[str, ...]:
    """The files that make one example of ``task``: its inputs, then its mask if it has one."""
    return (*task.inputs, *((task.target_image,) if task.target_image else ()))
