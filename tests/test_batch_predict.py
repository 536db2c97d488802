"""Batch scoring on a real local Ray: from and to S3 (a loopback server), one record per file,
reasons for the bad ones, and a local job killed half-way whose re-run completes it without
scoring anything twice.

The service's answers for the same images are compared in test_service.py, beside its
served champion."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch
from factories import model_spec
from shell import user_env

from lensops.config import LensopsConfig
from lensops.data import samples
from lensops.model import artifact
from lensops.scoring import parts
from lensops.scoring.batch import BatchOutcome, batch_predict
from lensops.tracking import registry, runs

pytestmark = pytest.mark.slow

NAME = "test-batch"
PLANTED = {
    "corrupt.png": "unreadable",
    "truncated.png": "truncated",
    "tiny.png": "too_small",
    "not_an_image.png": "not_image",
}
"""The planted files the service's image rules refuse (duplicates are fine images)."""
IP = shutil.which("ip") or "/usr/sbin/ip"
HAPROXY_STATE = "/tmp/lensops-hap-*"
"""Where a local Ray that lensops starts keeps HAProxy's files (removed when its driver exits)."""


@pytest.fixture(scope="module")
def champion(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> registry.RegisteredVersion:
    """A freshly initialised resnet18 at 32 px, registered and made champion: scoring needs a
    registered version, not a good one (test_service.py compares a trained one with the service)."""
    spec = model_spec(classes=["clean", "dusty"])
    torch.manual_seed(0)
    directory = artifact.save(tmp_path_factory.mktemp("model"), spec.build_network(load_weights=False), spec)
    run_id = runs.create_run(mlflow_uri, "test-batch", "untrained", {})
    version = registry.register(
        mlflow_uri, NAME, run_id, runs.log_directory(mlflow_uri, run_id, directory, "model"), {}
    )
    registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, version.version)
    return version


@pytest.fixture(scope="module")
def new_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 unseen synthetic cells in class folders, the planted bad files, one image at the top
    and one three folders deep, and a manifest.csv that is not an image."""
    root = tmp_path_factory.mktemp("new") / "images"
    samples.write_synthetic(root, count_per_class=100, size=40, seed=7)
    samples.add_bad_files(root)
    donor = sorted((root / "clean").glob("clean_*.png"))
    shutil.copy(donor[0], root / "top.png")
    (root / "site-a" / "row-2" / "cam-1").mkdir(parents=True)
    shutil.copy(donor[1], root / "site-a" / "row-2" / "cam-1" / "deep.png")
    return root


def image_count(root: Path) -> int:
    return sum(1 for p in root.rglob("*.png"))


@pytest.fixture(scope="module")
def cfg(classification_cfg: LensopsConfig) -> LensopsConfig:
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = NAME
    cfg.tracking.experiment = "test-batch"  # test_training counts the runs of the shared fit's experiment
    cfg.batch.batch_size = 32
    return cfg


@pytest.fixture(scope="module")
def first_run(
    ray_cluster: None,
    cfg: LensopsConfig,
    champion: registry.RegisteredVersion,
    new_images: Path,
    s3_upload: Callable[[Path, str, str], str],
) -> BatchOutcome:
    """The images read from an ``s3://`` prefix and scored into another, on the loopback S3
    server (the killed job below reads and writes a local folder)."""
    return batch_predict(cfg, s3_upload(new_images, "batch-in", "night-1"), "s3://batch-in/scored/night-1")


def test_every_file_gets_one_record_and_refused_files_their_reason(
    first_run: BatchOutcome, new_images: Path, champion: registry.RegisteredVersion
) -> None:
    table = parts.read(first_run.output)
    assert table.num_rows == image_count(new_images) == 208 == first_run.files
    assert len(set(table["path"].to_pylist())) == table.num_rows
    assert all(p.startswith("s3://batch-in/night-1/") for p in table["path"].to_pylist())
    rows = table.to_pylist()
    refused = {Path(r["path"]).name: r["reason"] for r in rows if r["status"] == "rejected"}
    assert refused == PLANTED
    scored = [r for r in rows if r["status"] == "ok"]
    assert len(scored) == first_run.scored == 204
    for row in scored:
        assert row["model_name"] == NAME and row["model_version"] == champion.version
        assert row["dataset_version"] == "ds-x" and row["run_id"] == champion.run_id
        probabilities = dict(row["probabilities"])
        assert row["prediction"] == max(probabilities, key=probabilities.get)
        assert abs(sum(probabilities.values()) - 1) < 1e-5 and row["confidence"] == max(probabilities.values())
        assert len(row["content_hash"]) == 64 and len(row["input_mean"]) == 3
    folders = {Path(r["path"]).name: r["folder"] for r in rows}
    assert folders["top.png"] == "" and folders["deep.png"] == "site-a/row-2/cam-1"
    assert folders["tiny.png"] == "dusty"
    predicted = pc.value_counts(pc.filter(table["prediction"], pc.equal(table["status"], "ok"))).to_pylist()
    assert {item["values"]: item["counts"] for item in predicted} == dict(first_run.predictions)


def test_the_job_is_tracked_in_mlflow(first_run: BatchOutcome, cfg: LensopsConfig) -> None:
    run = runs.client(cfg.tracking.tracking_uri).get_run(first_run.run_id)
    metrics = run.data.metrics
    assert metrics["files"] == 208 and metrics["scored"] == 204 and metrics["rejected"] == 4
    assert {k: v for k, v in metrics.items() if k.startswith("rejected_")} == {
        f"rejected_{r}": 1 for r in PLANTED.values()
    }
    assert sum(v for k, v in metrics.items() if k.startswith("predicted_")) == 204
    assert run.data.tags["lensops.output"] == first_run.output
    assert run.data.params["model_version"] == first_run.model.version


def test_a_job_killed_half_way_completes_without_rescoring(
    ray_cluster: None, cfg: LensopsConfig, champion: registry.RegisteredVersion, new_images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state_dirs = set(glob.glob(HAPROXY_STATE))
    job = _start_job_on_a_machine_of_its_own(new_images, out, cfg.tracking.tracking_uri, tmp_path)
    try:
        _wait_for(lambda: len(list(out.glob("part-*.parquet"))) >= 2 or job.poll() is not None, 300)
        namespace = os.readlink(f"/proc/{job.pid}/ns/pid_for_children")
    finally:
        job.kill()  # the namespace's first process dies with it, and then every other one
        job.wait(timeout=30)
    _wait_for(lambda: not _processes_in(namespace), 60)
    for folder in set(glob.glob(HAPROXY_STATE)) - state_dirs:  # the lost machine's /tmp went with it
        shutil.rmtree(folder)
    before = parts.read(str(out)).num_rows
    assert 0 < before < 208, f"the job was to be stopped half-way, it had scored {before} of 208"
    written = {path: path.stat().st_mtime_ns for path in out.iterdir()}

    rest = batch_predict(cfg, str(new_images), str(out))

    assert rest.already_scored == before and rest.scored + sum(rest.rejected.values()) == 208 - before
    assert {path: path.stat().st_mtime_ns for path in written} == written  # the re-run rewrote no part
    paths = parts.read(str(out), ["path"])["path"].to_pylist()
    assert len(paths) == len(set(paths)) == 208


def _start_job_on_a_machine_of_its_own(source: Path, out: Path, tracking_uri: str, home: Path) -> subprocess.Popen:
    """``lensops batch-predict`` on a local Ray of its own, in new PID and network namespaces:
    killing the namespace's first process kills every process of the job at once, as a lost
    machine would, and its Ray's ports collide with nothing of the test session."""
    sets = [
        f"tracking.tracking_uri={tracking_uri}",
        f"tracking.registered_model={NAME}",
        "batch.batch_size=4",
        "batch.concurrency=1",
    ]
    command = [
        sys.executable,
        "-m",
        "lensops.cli",
        "batch-predict",
        str(source),
        "--output",
        str(out),
        *(arg for item in sets for arg in ("--set", item)),
    ]
    namespace = ["unshare", "--pid", "--net", "--fork", "--mount-proc", "--kill-child"]
    loopback = f'{IP} link set lo up && exec "$0" "$@"'
    return subprocess.Popen(
        [*namespace, "sh", "-c", loopback, *command],
        env=user_env(home=home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _processes_in(namespace: str) -> list[int]:
    """The processes of a PID namespace (``pid:[<inode>]``)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == namespace:
                found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
