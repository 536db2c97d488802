"""Batch scoring's pure parts: what gets listed, how files are checked, the record schema, and
the parquet parts that make a re-run skip what is done."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
from factories import encode, noise_image

from lensops.model.forward import ModelInfo
from lensops.model.preprocess import PreprocessSpec
from lensops.monitoring import records
from lensops.scoring import parts
from lensops.scoring.batch import BatchOutcome
from lensops.scoring.checking import ImageRules, read_and_check
from lensops.scoring.inputs import list_inputs

SPEC = PreprocessSpec(image_size=16, resize_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
RULES = ImageRules(min_side=32, max_side=512, max_pixels=512 * 512)
MODEL = ModelInfo(name="m", version="3", run_id="r", dataset_version="ds-1")


def png(seed: int = 0, side: int = 40) -> bytes:
    return encode(noise_image(side, side, seed=seed))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for rel, data in {
        "top.png": png(1),
        "dusty/a.JPG": encode(noise_image(40, 40, seed=2), "JPEG"),
        "site/row/cam/deep.webp": encode(noise_image(40, 40, seed=3), "WEBP"),
        "clean/notes.txt": b"not listed",
        "manifest.csv": b"path\n",
        ".cache/hidden.png": png(4),
        "clean/.hidden.png": png(5),
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# --- what gets listed ----------------------------------------------------------------------


def test_a_folder_lists_image_files_at_any_depth_with_their_folder(tree: Path) -> None:
    files = list_inputs(str(tree))

    assert dict(zip(files["path"], files["folder"], strict=True)) == {
        f"{tree}/dusty/a.JPG": "dusty",
        f"{tree}/site/row/cam/deep.webp": "site/row/cam",
        f"{tree}/top.png": "",
    }


def test_a_text_manifest_lists_paths_relative_to_itself(tree: Path) -> None:
    (tree / "list.txt").write_text("top.png\n\ndusty/a.JPG\n/elsewhere/x.png\n")

    files = list_inputs(str(tree / "list.txt"))

    assert files["path"].tolist() == [f"{tree}/top.png", f"{tree}/dusty/a.JPG", "/elsewhere/x.png"]
    assert files["folder"].tolist() == ["", "dusty", "/elsewhere"]


def test_a_csv_manifest_lists_its_path_column(tree: Path) -> None:
    (tree / "manifest.csv").write_text("path,label\ntop.png,clean\ndusty/a.JPG,dusty\n")

    assert list_inputs(str(tree / "manifest.csv"))["path"].tolist() == [f"{tree}/top.png", f"{tree}/dusty/a.JPG"]


def test_a_csv_manifest_without_a_path_column_says_so(tree: Path) -> None:
    (tree / "manifest.csv").write_text("file,label\ntop.png,clean\n")

    with pytest.raises(ValueError, match="a manifest needs a 'path' column; it has \\['file', 'label'\\]"):
        list_inputs(str(tree / "manifest.csv"))


def test_a_missing_folder_and_a_folder_without_images_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no folder at"):
        list_inputs(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no image files in"):
        list_inputs(str(tmp_path))


# --- how files are checked -----------------------------------------------------------------


def test_reading_checks_with_the_service_rules_and_drops_what_is_done(tmp_path: Path) -> None:
    files = {"good.png": png(1), "done.png": png(2), "tiny.png": png(3, side=8), "text.png": b"no image"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in [*files, "gone.png"]]
    done = {parts.key(str(tmp_path / "done.png"), hashlib.sha256(files["done.png"]).hexdigest())}
    batch = pd.DataFrame({"path": paths, "folder": [""] * len(paths)})

    out = read_and_check(batch, pafs.LocalFileSystem(), SPEC, RULES, done)

    names = [Path(p).name for p in out["path"]]
    assert names == ["good.png", "tiny.png", "text.png", "gone.png"]
    assert out["status"].tolist() == ["ok", "rejected", "rejected", "rejected"]
    assert out["reason"].tolist() == ["", "too_small", "not_image", "unreadable"]
    assert out["content_hash"][0] == hashlib.sha256(files["good.png"]).hexdigest() and out["content_hash"][3] == ""
    assert out["image"].shape == (4, 3, 16, 16) and out["image"].dtype == np.uint8
    assert out["image"][0].any() and not out["image"][1:].any()
    assert (out["input_format"][0], out["input_width"][0], out["input_height"][0]) == ("PNG", 40, 40)


def test_a_block_with_every_file_done_is_empty_but_shaped(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    done = {parts.key(str(tmp_path / "a.png"), hashlib.sha256(png()).hexdigest())}
    batch = pd.DataFrame({"path": [str(tmp_path / "a.png")], "folder": [""]})

    out = read_and_check(batch, pafs.LocalFileSystem(), SPEC, RULES, done)

    assert out["image"].shape == (0, 3, 16, 16) and len(out["path"]) == 0


# --- records and parts ---------------------------------------------------------------------


def test_answer_columns_of_a_classification_and_a_regression_answer() -> None:
    label = {"prediction": "dusty", "confidence": 0.9, "probabilities": {"clean": 0.1, "dusty": 0.9}}

    assert records.answer_columns(label) == {**label, "value": None, "embedding": None}
    assert records.answer_columns({"prediction": 0.25, "confidence": None, "embedding": [0.5, 1.0]}) == {
        "prediction": "0.25",
        "value": 0.25,
        "confidence": None,
        "probabilities": None,
        "embedding": [0.5, 1.0],
    }


def test_input_facts_are_per_channel_mean_and_std_in_unit_scale() -> None:
    images = np.zeros((1, 3, 2, 2), np.uint8)
    images[0, 0] = 255
    images[0, 1, 0] = 255

    mean, std = records.input_facts(images)

    np.testing.assert_allclose(mean, [[1.0, 0.5, 0.0]])
    np.testing.assert_allclose(std, [[0.0, 0.5, 0.0]])


def record(path: str, version: str = "3", **extra: object) -> dict:
    return {"path": path, "content_hash": f"h-{path}", "model_name": "m", "model_version": version, **extra}


def test_parts_read_back_in_the_schema_and_leave_no_temporary_file(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    parts.prepare(out)
    parts.write_part(records.table([record("a", status="ok", probabilities={"x": 1.0})]), out)
    parts.write_part(records.table([record("b", status="rejected", reason="not_image")]), out)

    table = parts.read(out)

    assert table.schema == records.SCHEMA
    assert sorted(table["path"].to_pylist()) == ["a", "b"]
    assert set(table["schema_version"].to_pylist()) == {records.SCHEMA_VERSION}
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in Path(out).iterdir())


def test_scored_keys_are_those_of_one_model_version(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    parts.prepare(out)
    parts.write_part(records.table([record("a"), record("b", version="2")]), out)

    assert parts.scored_keys(out, "m", "3") == {parts.key("a", "h-a")}
    assert parts.scored_keys(out, "other", "3") == set()


def test_an_output_that_does_not_exist_yet_reads_as_empty(tmp_path: Path) -> None:
    assert parts.read(str(tmp_path / "none")).num_rows == 0
    assert parts.scored_keys(str(tmp_path / "none"), "m", "3") == set()


def test_the_outcome_reads_as_lines_and_a_summary() -> None:
    outcome = BatchOutcome(
        output="out",
        model=MODEL,
        files=7,
        already_scored=2,
        predictions=Counter({"dusty": 2, "clean": 1}),
        rejected=Counter({"not_image": 2}),
        run_id="r1",
    )

    assert outcome.lines() == [
        "model: m version 3 (dataset ds-1)",
        "files: 7 (3 scored, 2 rejected, 2 already in the output)",
        "predicted: clean 1, dusty 2",
        "rejected: not_image 2",
        "output: out",
        "mlflow run: r1",
    ]
    assert outcome.summary()["scored"] == 3 and outcome.summary()["rejected_by_reason"] == {"not_image": 2}


def test_an_output_that_cannot_be_made_fails_before_scoring(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")

    with pytest.raises(parts.OutputError, match="cannot write to"):
        parts.prepare(str(tmp_path / "file" / "out"))
