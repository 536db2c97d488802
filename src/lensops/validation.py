"""Data validation: which files are skipped, and why. Bad files are reported, never fatal.

``check_image`` is the single definition of an acceptable image; the training data stage and
the online service's input guard both use it.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from enum import StrEnum
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel


class Issue(StrEnum):
    NOT_IMAGE = "not_image"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    DUPLICATE = "duplicate"
    CONFLICTING_LABELS = "conflicting_labels"


class ImageCheck(BaseModel):
    width: int = 0
    height: int = 0
    format: str = ""
    issue: Issue | None = None
    detail: str = ""


class DataValidationError(RuntimeError):
    """The dataset cannot be trained on (e.g. a class has too few usable images)."""


def check_image(data: bytes, min_side: int, max_pixels: int) -> ImageCheck:
    """Decode fully and judge one image; size limits are checked before pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return ImageCheck(issue=Issue.NOT_IMAGE, detail="no image format recognised")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(issue=Issue.TOO_LARGE, detail=str(exc)[:200])
    with img:
        width, height, fmt = *img.size, img.format or ""
        if width * height > max_pixels:
            detail = f"{width}x{height} exceeds {max_pixels} pixels"
            return ImageCheck(width=width, height=height, issue=Issue.TOO_LARGE, detail=detail)
        try:
            img.load()
        except OSError as exc:
            truncated = "truncated" in str(exc).lower()
            issue = Issue.TRUNCATED if truncated else Issue.UNREADABLE
            return ImageCheck(width=width, height=height, issue=issue, detail=str(exc)[:200])
        except (SyntaxError, ValueError) as exc:
            return ImageCheck(width=width, height=height, issue=Issue.UNREADABLE, detail=str(exc)[:200])
    if min(width, height) < min_side:
        detail = f"{width}x{height} is smaller than {min_side} px on a side"
        return ImageCheck(width=width, height=height, issue=Issue.TOO_SMALL, detail=detail)
    return ImageCheck(width=width, height=height, format=fmt)


def inspect_bytes(data: bytes | None, error: str, min_side: int, max_pixels: int) -> dict:
    """One manifest row's inspection result: content hash, size and issue (if any)."""
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

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.reason.value] = counts.get(item.reason.value, 0) + 1
        return counts

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2))


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
