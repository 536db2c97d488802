"""Validation through the whole catalog (Ray Data): every planted bad file is skipped with its reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from lensops.config import DataConfig
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.validation import (
    DataValidationError,
    ValidationReport,
)

PLANTED = {
    "clean/corrupt.png": "unreadable",
    "clean/truncated.png": "truncated",
    "dusty/tiny.png": "too_small",
    "dusty/not_an_image.png": "not_image",
    "clean/duplicate.png": "duplicate",
    "dusty/mislabelled.png": "conflicting_labels",
    # add_bad_files copies the second file of the first class into the other class: the
    # original is now ambiguous too, so both copies are skipped.
    "clean/clean_00001.png": "conflicting_labels",
}


def per_class(bad_dir: Path) -> int:
    """Good images per class that the ``bad_dir`` fixture generated."""
    return len(list((bad_dir / "clean").glob("clean_*.png")))


def relative_reasons(catalog: Catalog, root: Path) -> dict[str, str]:
    prefix = str(root.resolve()) + "/"
    return {item.path.removeprefix(prefix): item.reason.value for item in catalog.report.skipped}


# --- the planted bad files, through the whole catalog (Ray Data) ---------------------------


def test_each_planted_bad_file_is_skipped_with_its_reason_and_nothing_else_is(
    bad_catalog: Catalog, bad_dir: Path
) -> None:
    assert relative_reasons(bad_catalog, bad_dir) == PLANTED


def test_skipped_files_are_not_in_the_catalog_and_good_files_all_are(bad_catalog: Catalog, bad_dir: Path) -> None:
    kept = set(bad_catalog.table["path"])
    root = bad_dir.resolve()

    assert kept.isdisjoint(str(root / rel) for rel in PLANTED)
    good = {str(p) for p in root.glob("*/*.png")} - {str(root / rel) for rel in PLANTED}
    assert kept == good
    report = bad_catalog.report
    assert report.total_files == 2 * per_class(bad_dir) + 6
    assert report.kept_files == 2 * per_class(bad_dir) + 6 - len(PLANTED)
    assert report.skipped_by_reason() == {
        "unreadable": 1,
        "truncated": 1,
        "too_small": 1,
        "not_image": 1,
        "duplicate": 1,
        "conflicting_labels": 2,
    }


def test_skip_details_explain_the_reason(bad_catalog: Catalog, bad_dir: Path) -> None:
    root = bad_dir.resolve()
    details = {item.path.removeprefix(f"{root}/"): item.detail for item in bad_catalog.report.skipped}
    labels = {item.path.removeprefix(f"{root}/"): item.label for item in bad_catalog.report.skipped}

    assert details["clean/duplicate.png"] == f"same content as {root}/clean/clean_00000.png"
    assert details["dusty/mislabelled.png"] == "same content labelled clean and dusty"
    assert details["clean/clean_00001.png"] == "same content labelled clean and dusty"
    assert details["dusty/tiny.png"] == "12x12 is smaller than 32 px on a side"
    assert details["dusty/not_an_image.png"] == "no image format recognised"
    assert "truncated" in details["clean/truncated.png"]
    assert labels == {rel: rel.split("/")[0] for rel in PLANTED}


def test_the_report_is_written_as_json(bad_catalog: Catalog, tmp_path: Path) -> None:
    path = tmp_path / "reports" / "validation.json"

    bad_catalog.report.write(path)

    data = json.loads(path.read_text())
    assert data["dataset_version"] == bad_catalog.version
    assert data["classes"] == ["clean", "dusty"]
    assert {Path(item["path"]).name: item["reason"] for item in data["skipped"]} == {
        Path(rel).name: reason for rel, reason in PLANTED.items()
    }
    assert ValidationReport.model_validate(data) == bad_catalog.report


def test_small_decode_batches_give_the_same_catalog(bad_catalog: Catalog, bad_dir: Path) -> None:
    catalog = build_catalog(DataConfig(source=str(bad_dir), decode_batch_size=4))

    assert catalog.version == bad_catalog.version
    assert catalog.report == bad_catalog.report
    pd.testing.assert_frame_equal(catalog.table, bad_catalog.table)


def test_a_manifest_row_whose_file_is_missing_is_skipped_as_unreadable(
    ray_cluster: None, small_export: Callable[..., Path]
) -> None:
    out = small_export("missing")
    with (out / "manifest.csv").open("a") as manifest:
        manifest.write("clean/gone.png,clean,0.0\n")

    catalog = build_catalog(DataConfig(source=str(out / "manifest.csv")))

    assert relative_reasons(catalog, out) == {"clean/gone.png": "unreadable"}
    assert catalog.report.skipped[0].detail.startswith("cannot read: ")
    assert catalog.report.kept_files == 16


def test_a_class_below_the_minimum_is_an_error_naming_it(ray_cluster: None, bad_dir: Path) -> None:
    # clean keeps all but its second file (which conflicts); dusty keeps all of its own.
    count = per_class(bad_dir)
    cfg = DataConfig(source=str(bad_dir), min_images_per_class=count)

    with pytest.raises(DataValidationError) as caught:
        build_catalog(cfg)

    message = str(caught.value)
    assert f"'clean' has {count - 1}" in message
    assert "dusty" not in message
    assert f"at least {count} per class" in message
