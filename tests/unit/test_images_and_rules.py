"""The image rules and the dataset rules of validation: pure logic, no Ray."""

from __future__ import annotations

import hashlib
import time

import pandas as pd
import pytest
from factories import encode, noise_image, png_header_only

from lensops.data.images import Issue, check_image
from lensops.data.inspection import inspect_bytes
from lensops.data.validation import DataValidationError, flag_duplicates, require_min_per_class


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
