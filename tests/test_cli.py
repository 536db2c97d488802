"""The ``lensops`` command, run as a real subprocess exactly as a user would."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from shell import user_env

from lensops.data import samples

PLANTED_REASONS = {
    "corrupt.png": "unreadable",
    "truncated.png": "truncated",
    "tiny.png": "too_small",
    "not_an_image.png": "not_image",
    "duplicate.png": "duplicate",
    "mislabelled.png": "conflicting_labels",
    "clean_00001.png": "conflicting_labels",
}


def lensops(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lensops.cli", *args],
        cwd=cwd,
        env=user_env(COLUMNS="80", NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("cli")
    result = lensops(
        "sample-data", "data", "--source", "synthetic", "--count", "20", "--size", "40",
        "--bad-files", cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote 40 synthetic images to data" in result.stdout
    assert "planted 6 bad files" in result.stdout
    return cwd / "data"


def test_sample_data_writes_an_image_folder_with_a_manifest(sample_dir: Path) -> None:
    assert sorted(p.name for p in sample_dir.iterdir()) == ["LICENSE", "clean", "dusty", "manifest.csv"]
    assert len(list(sample_dir.glob("clean/clean_*.png"))) == 20
    assert len(list(sample_dir.glob("dusty/dusty_*.png"))) == 20
    with (sample_dir / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "dust_level"]
    assert len(rows) == 46
    assert all((sample_dir / row["path"]).is_file() for row in rows)


def test_validate_prints_the_version_and_every_skipped_file_with_its_reason(
    sample_dir: Path,
) -> None:
    cwd = sample_dir.parent

    result = lensops("validate", "data", "--report", "r.json", cwd=cwd)

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((cwd / "r.json").read_text())
    version = report["dataset_version"]
    assert version.startswith("ds-")
    out = result.stdout
    assert f"version {version}" in out
    assert "kept 39/46 files" in out
    lines = out.splitlines()
    for name, reason in PLANTED_REASONS.items():
        assert any(name in line and reason in line for line in lines), (name, reason, out)
    assert {Path(item["path"]).name: item["reason"] for item in report["skipped"]} == PLANTED_REASONS
    assert (cwd / ".lensops" / "datasets" / version / "manifest.parquet").is_file()
    assert f"manifest: .lensops/datasets/{version}/manifest.parquet" in out
    assert "report: r.json" in out
    # at its natural width off a terminal (COLUMNS=80 here): no path wraps, and Ray stays quiet
    assert any(line.startswith("│ dusty/mislabelled.png ") for line in lines), out
    for noise in ("Started a local Ray instance", "Execution plan of Dataset", "Running Dataset"):
        assert noise not in out + result.stderr, noise


def test_validate_json_is_the_report_alone_on_stdout(sample_dir: Path) -> None:
    result = lensops("validate", "data", "--json", cwd=sample_dir.parent)

    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)
    assert answer["report"]["kept_files"] == 39
    assert {Path(item["path"]).name for item in answer["report"]["skipped"]} == set(PLANTED_REASONS)
    assert answer["manifest"].endswith(f"{answer['report']['dataset_version']}/manifest.parquet")


def test_validate_rejects_an_unknown_config_key_before_starting_ray(sample_dir: Path) -> None:
    result = lensops("validate", "data", "--set", "train.lrr=1", cwd=sample_dir.parent, timeout=60)

    assert result.returncode == 2
    assert "unknown key 'train.lrr'" in result.stderr
    assert "Started a local Ray instance" not in result.stderr


def test_sample_data_elpv_writes_real_cells_labelled_by_defect_probability(tmp_path: Path) -> None:
    pytest.importorskip("elpv_dataset", reason="needs the optional elpv extra")

    result = lensops("sample-data", "elpv", "--source", "elpv", "--limit", "60", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "wrote 60 elpv images to elpv" in result.stdout
    out = tmp_path / "elpv"
    assert sorted(p.name for p in out.iterdir()) == ["LICENSE", "defective", "functional", "manifest.csv"]
    with (out / "manifest.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["path", "label", "defect_probability", "module_type"]
    assert len(rows) == 60
    source = samples.elpv_root() / "images"
    for row in rows:
        probability = float(row["defect_probability"])
        assert row["label"] == ("defective" if probability >= 0.5 else "functional")
        assert row["path"] == f"{row['label']}/{Path(row['path']).name}"
        assert row["module_type"] in {"mono", "poly"}
        copied = out / row["path"]
        assert copied.read_bytes() == (source / copied.name).read_bytes()
    labels = [row["label"] for row in rows]
    assert {"defective", "functional"} == set(labels)
    for label in ("defective", "functional"):
        assert len(list((out / label).iterdir())) == labels.count(label)
