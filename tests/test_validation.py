"""Validation: every planted bad file is skipped with its reason; image checks; class minimums."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lensops.catalog import Catalog, build_catalog
from lensops.config import DataConfig
from lensops.validation import (
    DataValidationError,
    Issue,
    ValidationReport,
    check_image,
    flag_duplicates,
    inspect_bytes,
    require_min_per_class,
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


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


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


def test_require_min_per_class_counts_classes_with_no_usable_images() -> None:
    kept = pd.DataFrame({"label": ["a"] * 6 + ["b"] * 2})

    require_min_per_class(kept, ["a"], 5)
    with pytest.raises(DataValidationError, match="'b' has 2, 'c' has 0"):
        require_min_per_class(kept, ["a", "b", "c"], 5)


# --- duplicates (no Ray) -----------------------------------------------------------------


def test_flag_duplicates_keeps_the_first_path_of_repeats_within_a_label() -> None:
    files = pd.DataFrame(
        {
            "path": ["a/3.png", "a/1.png", "a/2.png", "b/9.png", "b/x.png", "a/y.png"],
            "label": ["a", "a", "a", "b", "b", "a"],
            "sha256": ["s1", "s1", "s1", "s2", "", ""],
            "issue": [None, None, None, None, "unreadable", "unreadable"],
            "detail": ["", "", "", "", "cannot read", "cannot read"],
        }
    )

    flagged = flag_duplicates(files).set_index("path")

    assert flagged["issue"].fillna("kept").to_dict() == {
        "a/1.png": "kept",
        "a/2.png": "duplicate",
        "a/3.png": "duplicate",
        "b/9.png": "kept",
        "b/x.png": "unreadable",
        "a/y.png": "unreadable",
    }
    assert flagged.loc["a/3.png", "detail"] == "same content as a/1.png"
    assert files["issue"].isna().sum() == 4, "the input frame is not modified"


def test_flag_duplicates_skips_every_copy_of_content_under_two_labels() -> None:
    files = pd.DataFrame(
        {
            "path": ["a/1.png", "a/2.png", "b/1.png"],
            "label": ["a", "a", "b"],
            "sha256": ["s", "s", "s"],
            "issue": [None, None, None],
            "detail": ["", "", ""],
        }
    )

    flagged = flag_duplicates(files)

    assert flagged["issue"].tolist() == ["conflicting_labels"] * 3
    assert set(flagged["detail"]) == {"same content labelled a and b"}


# --- check_image (no Ray) ----------------------------------------------------------------


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "PNG"), ("L", "PNG"), ("RGB", "JPEG")])
def test_a_good_image_passes_with_its_size(mode: str, fmt: str) -> None:
    check = check_image(encode(noise_image(60, 40, mode), fmt), min_side=32, max_pixels=10_000)

    assert check.issue is None
    assert (check.width, check.height) == (60, 40)
    assert check.detail == ""


def test_the_shorter_side_must_reach_min_side() -> None:
    data = encode(noise_image(100, 31))

    assert check_image(data, min_side=31, max_pixels=10**6).issue is None
    check = check_image(data, min_side=32, max_pixels=10**6)
    assert check.issue is Issue.TOO_SMALL
    assert check.detail == "100x31 is smaller than 32 px on a side"


def test_an_image_above_max_pixels_is_too_large_before_decoding() -> None:
    data = encode(noise_image(48, 48))

    assert check_image(data, min_side=8, max_pixels=48 * 48).issue is None
    check = check_image(data, min_side=8, max_pixels=48 * 48 - 1)
    assert check.issue is Issue.TOO_LARGE
    assert check.detail == "48x48 exceeds 2303 pixels"
    assert (check.width, check.height) == (48, 48)


def test_a_huge_declared_size_is_too_large_without_allocating_it() -> None:
    data = png_header_only(8_000, 8_000)
    started = time.perf_counter()

    check = check_image(data, min_side=32, max_pixels=50_000_000)

    assert check.issue is Issue.TOO_LARGE
    assert check.detail == "8000x8000 exceeds 50000000 pixels"
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("side", [10_000, 30_000])
def test_pillow_decompression_bomb_limits_are_reported_as_too_large(side: int) -> None:
    # 10,000^2 trips Pillow's warning threshold, 30,000^2 its hard error; neither is decoded.
    check = check_image(png_header_only(side, side), min_side=32, max_pixels=10**12)

    assert check.issue is Issue.TOO_LARGE
    assert f"{side * side} pixels" in check.detail
    assert "decompression bomb" in check.detail


@pytest.mark.parametrize("data", [b"", b"this is a text file, not an image\n", b"\x89PNG\r\n"])
def test_bytes_that_are_no_image_format_are_not_image(data: bytes) -> None:
    check = check_image(data, min_side=1, max_pixels=10**6)

    assert check.issue is Issue.NOT_IMAGE
    assert check.detail == "no image format recognised"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_cut_off_file_is_truncated(fmt: str) -> None:
    data = encode(noise_image(64, 64), fmt)

    check = check_image(data[: len(data) // 2], min_side=32, max_pixels=10**6)

    assert check.issue is Issue.TRUNCATED
    assert (check.width, check.height) == (64, 64)


def test_a_valid_header_with_garbage_data_is_unreadable() -> None:
    data = encode(noise_image(64, 64))

    check = check_image(data[:64] + bytes(range(256)) * 8, min_side=32, max_pixels=10**6)

    assert check.issue is Issue.UNREADABLE


def test_inspect_bytes_hashes_the_content_and_reports_read_errors() -> None:
    data = encode(noise_image(40, 40))

    good = inspect_bytes(data, "", min_side=32, max_pixels=10**6)
    missing = inspect_bytes(None, "cannot read: gone", min_side=32, max_pixels=10**6)

    assert good == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": 40,
        "height": 40,
        "issue": None,
        "detail": "",
    }
    assert missing == {
        "sha256": "",
        "width": 0,
        "height": 0,
        "issue": "unreadable",
        "detail": "cannot read: gone",
    }
