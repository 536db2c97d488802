"""Listing a dataset's files and assigning splits by content hash: pure logic, no Ray."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from lensops.config import SplitConfig
from lensops.data.sources import list_files
from lensops.data.splits import SPLITS, assign_splits


def fake_sha256s(label: str, count: int) -> pd.Series:
    """Content hashes standing in for ``count`` distinct images (no decoding needed)."""
    names = (f"{label}/{label}_{i:05d}.png" for i in range(count))
    return pd.Series([hashlib.sha256(name.encode()).hexdigest() for name in names])


# --- listing (no Ray) ---------------------------------------------------------------------


def test_folder_listing_takes_the_label_from_the_first_folder_and_skips_hidden_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "cats" / "nested").mkdir(parents=True)
    (tmp_path / "dogs").mkdir()
    (tmp_path / ".cache").mkdir()
    for rel in ("cats/a.png", "cats/nested/b.png", "dogs/c.png", "dogs/.DS_Store", ".cache/x.png"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text("path,label\n")

    files = list_files(str(tmp_path)).sort_values("path").reset_index(drop=True)

    root = tmp_path.resolve()
    assert files["path"].tolist() == [
        str(root / "cats/a.png"),
        str(root / "cats/nested/b.png"),
        str(root / "dogs/c.png"),
    ]
    assert files["label"].tolist() == ["cats", "cats", "dogs"]


def test_listing_a_missing_or_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no image folder"):
        list_files(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="expected <root>/<class>/<image>"):
        list_files(str(tmp_path))


def test_a_manifest_without_a_label_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,target\na.png,1\n")

    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        list_files(str(tmp_path / "manifest.csv"))


def test_manifest_paths_are_resolved_against_the_manifest_folder(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,label\na/1.png,0\n/abs/2.png,1\ns3://b/3.png,1\n")

    files = list_files(str(tmp_path / "manifest.csv"))

    assert files["path"].tolist() == [
        str(tmp_path.resolve() / "a/1.png"),
        "/abs/2.png",
        "s3://b/3.png",
    ]
    assert files["label"].tolist() == ["0", "1", "1"]


# --- splits (no Ray) ----------------------------------------------------------------------


def test_split_assignment_is_deterministic_and_keeps_the_index() -> None:
    shas = fake_sha256s("file", 500)
    shas.index = shas.index + 1000

    first = assign_splits(shas, SplitConfig())
    again = assign_splits(shas.copy(), SplitConfig())

    assert first.equals(again)
    assert first.index.equals(shas.index)
    assert set(first) == set(SPLITS)


def test_adding_files_never_moves_an_existing_file_to_another_split() -> None:
    old = fake_sha256s("old", 300)
    grown = pd.concat([fake_sha256s("new", 200), old, fake_sha256s("newer", 50)], ignore_index=True)

    before = dict(zip(old, assign_splits(old, SplitConfig()), strict=True))
    after = dict(zip(grown, assign_splits(grown, SplitConfig()), strict=True))

    assert all(after[sha] == split for sha, split in before.items())


def test_the_split_seed_changes_the_assignment() -> None:
    shas = fake_sha256s("file", 500)

    moved = assign_splits(shas, SplitConfig(seed=1)) != assign_splits(shas, SplitConfig(seed=0))

    assert 0.2 < moved.mean() < 0.8


@pytest.mark.parametrize("label", ["clean", "dusty", "cracked"])
def test_each_class_of_a_few_hundred_files_is_split_close_to_70_20_10(label: str) -> None:
    fractions = assign_splits(fake_sha256s(label, 400), SplitConfig()).value_counts(normalize=True)

    # About 3.5 standard deviations of a binomial fraction over 400 files.
    assert fractions["train"] == pytest.approx(0.7, abs=0.08)
    assert fractions["val"] == pytest.approx(0.2, abs=0.07)
    assert fractions["test"] == pytest.approx(0.1, abs=0.05)


def test_many_files_are_split_within_two_points_of_the_configured_fractions() -> None:
    cfg = SplitConfig(train=0.6, val=0.25, test=0.15)

    fractions = assign_splits(fake_sha256s("all", 5000), cfg).value_counts(normalize=True)

    assert fractions["train"] == pytest.approx(0.6, abs=0.02)
    assert fractions["val"] == pytest.approx(0.25, abs=0.02)
    assert fractions["test"] == pytest.approx(0.15, abs=0.02)


def test_a_zero_fraction_split_gets_no_files() -> None:
    splits = assign_splits(fake_sha256s("file", 300), SplitConfig(train=0.8, val=0.2, test=0.0))

    assert set(splits) == {"train", "val"}
