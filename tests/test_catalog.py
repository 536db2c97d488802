"""The catalog: listing, content versioning, hash-based stratified splits, manifests, output."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lensops.config import DataConfig
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.splits import SPLITS
from lensops.data.validation import DataValidationError

FOLDER_COLUMNS = ["path", "label", "sha256", "width", "height", "label_index", "split"]


def catalog_of(source: Path | str, **options: object) -> Catalog:
    return build_catalog(DataConfig(source=str(source), **options))


def split_by_sha(catalog: Catalog) -> dict[str, str]:
    return dict(zip(catalog.table["sha256"], catalog.table["split"], strict=True))


# --- versions and splits of real catalogs (Ray Data) --------------------------------------


@pytest.fixture(scope="module")
def base_export(small_export: Callable[..., Path]) -> Path:
    return small_export("base")


@pytest.fixture(scope="module")
def base_catalog(ray_cluster: None, base_export: Path) -> Catalog:
    return catalog_of(base_export)


def copy_of(source: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(source, tmp_path / name))


def test_two_exports_of_the_same_seed_have_the_same_version(
    base_catalog: Catalog, small_export: Callable[..., Path]
) -> None:
    other = catalog_of(small_export("elsewhere"))

    assert other.version == base_catalog.version
    assert other.version.startswith("ds-")
    assert len(other.version) == len("ds-") + 12
    assert split_by_sha(other) == split_by_sha(base_catalog)
    assert set(other.table["path"]).isdisjoint(base_catalog.table["path"])


def test_another_seed_gives_another_version(base_catalog: Catalog, small_export: Callable[..., Path]) -> None:
    assert catalog_of(small_export("seed1", seed=1)).version != base_catalog.version


def test_changing_the_bytes_of_one_image_changes_the_version(
    base_catalog: Catalog, base_export: Path, tmp_path: Path
) -> None:
    changed = copy_of(base_export, tmp_path, "changed")
    target = changed / "clean" / "clean_00003.png"
    with Image.open(target) as img:
        pixels = img.convert("RGB")
    pixels.putpixel((0, 0), tuple(255 - v for v in pixels.getpixel((0, 0))))
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    target.write_bytes(buffer.getvalue())

    catalog = catalog_of(changed)

    assert catalog.version != base_catalog.version
    assert len(catalog.table) == len(base_catalog.table)


def test_changing_the_label_of_one_image_changes_the_version(
    base_catalog: Catalog, base_export: Path, tmp_path: Path
) -> None:
    relabelled = copy_of(base_export, tmp_path, "relabelled")
    (relabelled / "clean" / "clean_00003.png").rename(relabelled / "dusty" / "clean_00003.png")

    catalog = catalog_of(relabelled)

    assert catalog.version != base_catalog.version
    assert catalog.report.kept_files == base_catalog.report.kept_files
    moved = catalog.table[catalog.table["path"].str.endswith("/dusty/clean_00003.png")]
    assert moved["label"].tolist() == ["dusty"]
    assert moved["label_index"].tolist() == [1]


def test_renaming_a_file_within_its_class_keeps_the_version_and_its_split(
    base_catalog: Catalog, base_export: Path, tmp_path: Path
) -> None:
    renamed = copy_of(base_export, tmp_path, "renamed")
    (renamed / "clean" / "clean_00003.png").rename(renamed / "clean" / "zz_renamed.png")

    catalog = catalog_of(renamed)

    assert catalog.version == base_catalog.version
    assert split_by_sha(catalog) == split_by_sha(base_catalog)


def test_adding_images_keeps_the_split_of_every_existing_image(
    base_catalog: Catalog, base_export: Path, small_export: Callable[..., Path], tmp_path: Path
) -> None:
    grown = copy_of(base_export, tmp_path, "grown")
    extra = small_export("extra", seed=7, count=10)
    for image in extra.glob("*/*.png"):
        shutil.copyfile(image, grown / image.parent.name / f"new_{image.name}")

    catalog = catalog_of(grown)

    assert catalog.version != base_catalog.version
    assert len(catalog.table) == len(base_catalog.table) + 20
    after = split_by_sha(catalog)
    assert all(after[sha] == split for sha, split in split_by_sha(base_catalog).items())


def test_a_catalog_row_describes_each_image(synthetic_catalog: Catalog, synthetic_dir: Path) -> None:
    table = synthetic_catalog.table

    assert list(table.columns) == FOLDER_COLUMNS
    assert len(table) == 120
    assert synthetic_catalog.classes == ["clean", "dusty"]
    assert synthetic_catalog.source == str(synthetic_dir)
    assert table["path"].is_unique
    first = table.sort_values("path").iloc[0]
    expected_path = synthetic_dir.resolve() / "clean" / "clean_00000.png"
    assert first["path"] == str(expected_path)
    assert first["sha256"] == hashlib.sha256(expected_path.read_bytes()).hexdigest()
    assert (first["label"], first["label_index"]) == ("clean", 0)
    assert set(table["width"]) == {48}
    assert set(table["height"]) == {48}
    assert dict(zip(table["label"], table["label_index"], strict=True)) == {"clean": 0, "dusty": 1}
    assert table["label_index"].dtype == "int64"


def test_the_report_counts_each_class_per_split(synthetic_catalog: Catalog) -> None:
    report = synthetic_catalog.report
    table = synthetic_catalog.table

    assert report.dataset_version == synthetic_catalog.version
    assert (report.total_files, report.kept_files) == (120, 120)
    assert report.skipped == []
    for split in SPLITS:
        rows = synthetic_catalog.split(split)
        assert set(rows["split"]) == {split}
        assert rows.index.tolist() == list(range(len(rows)))
        for label in synthetic_catalog.classes:
            assert report.class_counts[split][label] == int((rows["label"] == label).sum())
            assert report.class_counts[split][label] > 0
    assert sum(sum(c.values()) for c in report.class_counts.values()) == len(table)


def test_a_manifest_source_keeps_extra_columns_and_resolves_relative_paths(
    synthetic_catalog: Catalog, synthetic_dir: Path
) -> None:
    catalog = catalog_of(synthetic_dir / "manifest.csv")
    table = catalog.table.set_index("path")

    assert list(catalog.table.columns) == ["path", "label", "dust_level", *FOLDER_COLUMNS[2:]]
    assert set(table.index) == set(synthetic_catalog.table["path"])
    assert catalog.version == synthetic_catalog.version
    manifest = pd.read_csv(synthetic_dir / "manifest.csv")
    for rel, level in zip(manifest["path"], manifest["dust_level"], strict=True):
        assert table.loc[str(synthetic_dir.resolve() / rel), "dust_level"] == level
    clean = table[table["label"] == "clean"]
    dusty = table[table["label"] == "dusty"]
    assert (clean["dust_level"] == 0).all()
    assert (dusty["dust_level"] > 0).all()


def test_a_regression_target_is_part_of_the_version(synthetic_catalog: Catalog, synthetic_dir: Path) -> None:
    catalog = catalog_of(synthetic_dir / "manifest.csv", target_column="dust_level")

    assert catalog.version != synthetic_catalog.version
    assert split_by_sha(catalog) == split_by_sha(synthetic_catalog)


def test_a_target_column_missing_from_the_source_is_an_error(ray_cluster: None, synthetic_dir: Path) -> None:
    with pytest.raises(DataValidationError, match="target column 'dust_level' is not in the manifest"):
        catalog_of(synthetic_dir, target_column="dust_level")


def test_write_produces_a_parquet_manifest_and_the_report(synthetic_catalog: Catalog, tmp_path: Path) -> None:
    out = synthetic_catalog.write(tmp_path / "datasets")

    assert out == tmp_path / "datasets" / synthetic_catalog.version
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == FOLDER_COLUMNS
    assert len(manifest) == 120
    assert manifest["path"].tolist() == synthetic_catalog.table["path"].tolist()
    assert manifest["split"].tolist() == synthetic_catalog.table["split"].tolist()
    assert manifest["label_index"].dtype == "int64"
    report = json.loads((out / "validation.json").read_text())
    assert report["dataset_version"] == synthetic_catalog.version
    assert report["kept_files"] == 120
