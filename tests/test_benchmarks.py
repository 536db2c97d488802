"""Smoke runs of the benchmark scripts: each prints its comparison table and sane numbers.

Each script runs as a user runs it (``python benchmarks/<name>.py --smoke --json out.json``), in
its own process with its own local Ray, for a few seconds of load or a couple of tiny epochs.
The figures are not checked against targets here (that is what a full run is for): only that
every side measured something and that no request failed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from shell import user_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def run_smoke(name: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    command = [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout, json.loads(out.read_text())


def positive(value: float) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


def test_serving_smoke(tmp_path: Path) -> None:
    stdout, result = run_smoke("serving", tmp_path)
    assert "serving:" in stdout and "lensops/FastAPI" in stdout
    rows = result["results"]["rows"]
    assert [r["concurrency"] for r in rows] == [1, 8]
    for row in rows:
        for key in ("lensops_img_per_s", "fastapi_img_per_s", "ceiling_img_per_s", "efficiency", "vs_fastapi"):
            assert positive(row[key]), (key, row)
        assert positive(row["model_vs_forward"]), row
        assert positive(row["lensops_p99_ms"]) and positive(row["fastapi_p99_ms"])
        assert row["lensops_errors"] == 0 and row["fastapi_errors"] == 0, row
    for rounds in result["results"]["levels"].values():  # the sides and the ceiling take turns
        assert [r["first"] for r in rounds] == ["lensops", "ceiling"]
        assert all(positive(r["ceiling"]["forward_cpu_ms"]) for r in rounds)
    ceiling = result["results"]["ceiling"]
    assert positive(ceiling["decode_cpu_ms"]) and positive(ceiling["forward_cpu_ms"])
    assert result["environment"]["cores"] >= 1


def test_hot_swap_smoke(tmp_path: Path) -> None:
    stdout, result = run_smoke("hot_swap", tmp_path)
    assert "hot swap:" in stdout and "during swap (lensops)" in stdout
    steady, swap = result["results"]["steady"], result["results"]["swap"]
    assert result["results"]["reload"] == {"status": 200, "old_version": "1", "new_version": "2", "alias": "champion"}
    assert steady["errors"] == 0 and swap["errors"] == 0
    assert positive(steady["img_per_s"]) and positive(swap["img_per_s"])
    assert steady["versions"].keys() == {"1"} and "2" in swap["versions"]


def test_ingest_smoke(tmp_path: Path) -> None:
    stdout, result = run_smoke("ingest", tmp_path)
    assert "ingest:" in stdout and "DataLoader" in stdout
    for row in result["results"]["rows"]:
        assert positive(row["lensops"]) and positive(row["baseline"]) and positive(row["ratio"]), row
    assert [r["first"] for r in result["results"]["rounds"]] == ["dataloader", "lensops_default"]


def test_training_smoke(tmp_path: Path) -> None:
    stdout, result = run_smoke("training", tmp_path)
    assert "training:" in stdout and "plain PyTorch loop" in stdout
    for row in result["results"]["rows"]:
        assert positive(row["lensops"]) and positive(row["baseline"]) and positive(row["ratio"]), row


def test_batch_predict_smoke(tmp_path: Path) -> None:
    stdout, result = run_smoke("batch_predict", tmp_path)
    assert "batch scoring:" in stdout and "plain loop" in stdout
    rounds = result["results"]["rounds"]
    assert [r["first"] for r in rounds] == ["lensops"]  # the smoke run measures one round
    for row in rounds:
        assert positive(row["lensops"]) and positive(row["plain"]) and positive(row["ratio"]), row
    assert positive(result["results"]["median_ratio"])


SERVER_SIDE = {"ray", "mlflow", "fastapi", "starlette", "rich", "pandas"}
"""What a bare GPU machine does not have: the GPU benchmark must not import any of it."""


def test_gpu_smoke_runs_on_the_torch_side_alone(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    command = [sys.executable, "-X", "importtime", str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, env=user_env(), capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    timed = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in timed}
    assert {"torch", "torchvision", "timm", "lensops"} <= imported
    assert not imported & SERVER_SIDE, imported & SERVER_SIDE
    rows = json.loads(out.read_text())["rows"]
    assert {row["part"] for row in rows} == {"forward", "train step", "decode -> forward"}
    assert all(positive(row["baseline"]) and positive(row["measured"]) for row in rows)
    assert "lensops torch side on cpu" in done.stdout
