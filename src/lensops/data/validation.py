"""Validate: which inspected files a dataset keeps, which it skips and why. Never fatal per file.

A run fails only when the kept data cannot be trained on (a class below the minimum, a
missing target column); every skipped file is in the report with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from lensops.config import DataConfig
from lensops.data.images import Issue
from lensops.data.sources import NOT_STATED


class DataValidationError(RuntimeError):
    """The dataset cannot be trained on (e.g. a class has too few usable images)."""


class SkippedFile(BaseModel):
    path: str
    label: str
    reason: Issue
    detail: str


class ValidationReport(BaseModel):
    source: str
    dataset_version: str
    total_files: int
    kept_files: int
    classes: list[str]
    class_counts: dict[str, dict[str, int]]
    """split -> label -> number of kept images."""
    skipped: list[SkippedFile]
    licence: str = NOT_STATED

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason.value] = counts.get(item.reason.value, 0) + 1
        return counts

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2))


def validate(
    inspected: pd.DataFrame, cfg: DataConfig, min_per_class: bool = True
) -> tuple[pd.DataFrame, list[SkippedFile]]:
    """(kept rows, skipped files) of an inspected file table; raises when nothing trainable is
    left. ``min_per_class=False`` where labels only describe the examples (a mask is the target)."""
    files = flag_duplicates(inspected)
    kept = files[files["issue"].isna()].drop(columns=["issue", "detail"])
    if cfg.target_column and cfg.target_column not in kept.columns:
        raise DataValidationError(f"target column '{cfg.target_column}' is not in the manifest of {cfg.source}")
    if min_per_class:
        require_min_per_class(kept, sorted(files["label"].astype(str).unique()), cfg.min_images_per_class)
    elif kept.empty:
        raise DataValidationError(f"no usable examples in {cfg.source}: every one was skipped (see the report)")
    return kept.reset_index(drop=True), skipped_files(files)


def flag_duplicates(files: pd.DataFrame) -> pd.DataFrame:
    """Mark repeated content among healthy files.

    The same bytes under two labels are ambiguous, so every copy is skipped; repeats under one
    label keep the first path. Splits are assigned by content hash, so identical bytes can
    never straddle two splits once these are removed.
    """
    files = files.copy()
    healthy = files[files["issue"].isna()]
    for _, group in healthy.groupby("sha256"):
        if len(group) < 2:
            continue
        labels = sorted(group["label"].astype(str).unique())
        ordered = group.sort_values("path")
        if len(labels) > 1:
            files.loc[group.index, "issue"] = Issue.CONFLICTING_LABELS.value
            files.loc[group.index, "detail"] = "same content labelled " + " and ".join(labels)
        else:
            first = ordered["path"].iloc[0]
            rest = ordered.index[1:]
            files.loc[rest, "issue"] = Issue.DUPLICATE.value
            files.loc[rest, "detail"] = f"same content as {first}"
    return files


def skipped_files(files: pd.DataFrame) -> list[SkippedFile]:
    bad = files[files["issue"].notna()].sort_values("path")
    return [
        SkippedFile(path=row.path, label=str(row.label), reason=Issue(row.issue), detail=row.detail)
        for row in bad.itertuples()
    ]


def require_min_per_class(kept: pd.DataFrame, classes: list[str], minimum: int) -> None:
    counts = kept["label"].value_counts()
    short = {c: int(counts.get(c, 0)) for c in classes if counts.get(c, 0) < minimum}
    if short:
        listed = ", ".join(f"'{c}' has {n}" for c, n in short.items())
        raise DataValidationError(
            f"too few usable images: {listed}; at least {minimum} per class are required "
            "(add images, fix the skipped files, or lower data.min_images_per_class)"
        )
