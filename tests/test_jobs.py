"""``ray job submit`` against a real ``ray start --head`` node: the retraining pipeline keeping
the champion, champion/challenger evaluation, a failed step, and the loop after deployment
closing by itself.

The submitted pipeline trains a deliberately weak model (one epoch at a tiny learning rate) in
the registry of the shared fit: it registers it as the challenger and keeps the champion, and
evaluation on its own (through the job file's earlier name, ``ray_jobs/evaluate.py``) refuses it
too; a failed step is named and leaves the champion. ``ray_jobs/train.py`` is submitted as the
README has it in ``test_docs.py`` (which also runs the path from ``ray start`` to a served model
swapped by the pipeline) and across nodes in ``test_multinode.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ray.job_submission import JobStatus, JobSubmissionClient
from shell import user_env
from traffic import RequestLoop

from lensops.config import LensopsConfig, load_config
from lensops.monitoring import shifts, store
from lensops.monitoring.monitor import WindowSource, check
from lensops.monitoring.targets import Targets
from lensops.monitoring.trigger import respond
from lensops.runtime import free_port, serve_env
from lensops.tracking import registry
from lensops.training.fit import TrainOutcome
from lensops.waiting import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _dashboard_up(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"ray start exited with {process.returncode}")
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:  # answering (e.g. 401 under Ray's token auth) means up
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head(aws_env: dict[str, str], mlflow_uri: str) -> Iterator[str]:
    """A separate single-node Ray cluster with the job server; yields its dashboard URL.

    Like a real head node, its environment names the tracking server."""
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="lt-head-", dir="/tmp")  # short: Ray and HAProxy put sockets under it
    (haproxy := Path(temp_dir) / "h").mkdir()  # its own HAProxy state and ports; short: socket paths end at 97
    env = serve_env(user_env(**aws_env, MLFLOW_TRACKING_URI=mlflow_uri), state_dir=haproxy)
    process = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--num-cpus=6",  # the service holds 2.5 while a pipeline trains beside it
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # every agent port explicit: the test session's own Ray already holds the defaults
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            # its own temp dir: a job resolves its cluster from the newest address file there
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_until(lambda: _dashboard_up(url, process), 120, f"the Ray dashboard at {url}", interval_s=1)
        yield url
    finally:
        stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop(process: subprocess.Popen, grace_s: float = 5) -> None:
    """Ends the head and everything it started, as ``ray stop --force`` would: ``ray start
    --block`` takes 30-60 s to wind down after a SIGTERM, so what is left after ``grace_s`` is
    killed."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def _submit(ray_head: str, *entrypoint: str) -> subprocess.CompletedProcess:
    """``ray job submit`` of this repository as working dir; waits for the job to end."""
    command = [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(REPO), "--", *entrypoint]
    return subprocess.run(command, env=user_env(), capture_output=True, text=True, timeout=900)


def _sets(cfg: LensopsConfig, work: Path, experiment: str, *extra: str) -> list[str]:
    overrides = [
        f"data.source={cfg.data.source}",
        f"data.work_dir={work}",
        f"tracking.tracking_uri={cfg.tracking.tracking_uri}",
        f"tracking.experiment={experiment}",
        f"tracking.registered_model={cfg.tracking.registered_model}",
        *extra,
    ]
    return [arg for item in overrides for arg in ("--set", item)]


CONFIG = "configs/synthetic.yaml"
TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
WEAK = ("train.epochs=1", "train.lr=0.000001", "train.warmup_epochs=0", "train.num_workers=1")
"""One epoch at a tiny learning rate: a model no better than chance (on one worker: data
parallelism is tested by the shared fit and across nodes in ``test_multinode.py``)."""


def _pipeline(ray_head: str, cfg: LensopsConfig, work: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = _sets(cfg, work, "test-pipeline", *extra)
    return _submit(ray_head, "python", "ray_jobs/pipeline.py", "--config", CONFIG, *sets)


def _field(output: str, prefix: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(prefix)).removeprefix(prefix).strip()


@pytest.fixture(scope="module")
def weak_pipeline(
    ray_head: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig, tmp_path_factory
) -> subprocess.CompletedProcess:
    """The pipeline job on the shared fit's champion, training a model worse than it."""
    uri, name = classification_cfg.tracking.tracking_uri, classification_cfg.tracking.registered_model
    registry.set_alias(uri, name, registry.CHAMPION, classification_run.version)
    done = _pipeline(ray_head, classification_cfg, tmp_path_factory.mktemp("job-work"), *WEAK)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr)
    return done


@pytest.fixture(scope="module")
def submitted_weak_version(weak_pipeline: subprocess.CompletedProcess) -> str:
    return _field(weak_pipeline.stdout, "challenger: version").split()[0]


def test_the_pipeline_registers_a_worse_challenger_and_keeps_the_champion(
    weak_pipeline: subprocess.CompletedProcess,
    submitted_weak_version: str,
    classification_run: TrainOutcome,
    classification_cfg: LensopsConfig,
) -> None:
    uri, name = classification_cfg.tracking.tracking_uri, classification_cfg.tracking.registered_model
    assert _field(weak_pipeline.stdout, "decision:").startswith("kept")
    assert _field(weak_pipeline.stdout, "champion: version") == classification_run.version
    assert int(submitted_weak_version) > int(classification_run.version)
    assert registry.find(uri, name, registry.CHALLENGER).version == submitted_weak_version
    assert registry.find(uri, name, registry.CHAMPION).version == classification_run.version


def test_a_training_job_prints_lensops_progress_not_ray_internals(weak_pipeline: subprocess.CompletedProcess) -> None:
    """The job's log reads as lensops' own: the epoch line (relayed from the Train controller
    to the driver), and none of what Ray's workers, Ray Data and MLflow print by themselves."""
    log = weak_pipeline.stdout + weak_pipeline.stderr
    assert "epoch 1/1 lr=" in log and "challenger: version" in log
    for noise in ("TrainingReport(", "Execution plan of Dataset", "Running Dataset", "(RayTrainWorker pid="):
        assert noise not in log, noise


def test_worse_challenger_is_refused_and_champion_kept(
    submitted_weak_version: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig, tmp_path
) -> None:
    uri = classification_cfg.tracking.tracking_uri
    name = classification_cfg.tracking.registered_model
    registry.set_alias(uri, name, registry.CHAMPION, classification_run.version)
    out = tmp_path / "decision.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "ray_jobs" / "evaluate.py"),
            "--decision",
            str(out),
            "--set",
            f"tracking.tracking_uri={uri}",
            "--set",
            f"tracking.registered_model={name}",
            "--set",
            f"tracking.experiment={classification_cfg.tracking.experiment}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=user_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    decision = json.loads(out.read_text())
    assert decision["promoted"] is False
    assert decision["challenger"]["version"] == submitted_weak_version
    assert decision["champion"]["version"] == classification_run.version
    assert decision["challenger"]["metrics"]["macro_f1"] < decision["champion"]["metrics"]["macro_f1"]
    assert "not more than margin" in decision["reason"]
    assert registry.find(uri, name, registry.CHAMPION).version == classification_run.version


def test_failed_pipeline_step_is_named_and_leaves_the_champion(
    ray_head: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig, tmp_path: Path
) -> None:
    uri, name = classification_cfg.tracking.tracking_uri, classification_cfg.tracking.registered_model
    champion = classification_run.version
    registry.set_alias(uri, name, registry.CHAMPION, champion)
    missing = classification_cfg.model_copy(deep=True)
    missing.data.source = str(tmp_path / "no-such-folder")
    done = _pipeline(ray_head, missing, tmp_path)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "step 'validate' failed" in output and "no image folder" in output
    assert f"left untouched (version {champion})" in output
    assert registry.find(uri, name, registry.CHAMPION).version == champion


LOOP = "test-loop"


def test_drift_in_served_traffic_retrains_and_the_service_swaps_to_the_new_champion(
    ray_head: str,
    submitted_weak_version: str,
    classification_cfg: LensopsConfig,
    training_dir: Path,
    tmp_path: Path,
) -> None:
    """serve a weak champion -> darker images arrive -> the monitor decides drift and submits
    the pipeline to the cluster -> the pipeline promotes a better model -> the service swaps to
    it, failing no request of a client that keeps sending darker images throughout. (The
    monitor runs here, in the test's process; the README's flow runs it as a job.)"""
    uri = classification_cfg.tracking.tracking_uri
    weak = registry.find(uri, classification_cfg.tracking.registered_model, submitted_weak_version)
    champion = registry.register(uri, LOOP, weak.run_id, weak.source, {}).version
    registry.set_alias(uri, LOOP, registry.CHAMPION, champion)
    log, port = tmp_path / "log", free_port()
    settings = [
        f"data.source={training_dir}",
        f"data.work_dir={tmp_path}",
        f"tracking.tracking_uri={uri}",
        "tracking.experiment=test-loop",
        f"tracking.registered_model={LOOP}",
        f"serve.log_path={log}",
        "serve.log_embeddings=true",
        "serve.log_flush_s=1",
        "serve.watch_interval_s=1",
        "serve.max_replicas=1",
        "serve.ingress_max_replicas=1",  # nothing scales up beside the training
        "train.epochs=2",  # one epoch from scratch stays at chance: nothing to promote
        "train.num_workers=1",  # the loop is under test, not data parallelism: one worker fewer to start
    ]
    sets = [arg for item in settings for arg in ("--set", item)]
    served = _submit(ray_head, "python", "-m", "lensops.cli", "serve", "--port", str(port), "--config", CONFIG, *sets)
    assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    darker = shifts.write_shifted(
        sorted(training_dir.rglob("*.png"))[::10], training_dir, tmp_path / "dark", "brightness", -0.4
    )
    files = [("files", (path.name, path.read_bytes())) for path in darker]
    assert requests.post(f"{url}/predict_batch", files=files, timeout=120).ok  # each image is logged
    wait_until(lambda: store.read(str(log), store.PREDICTIONS).num_rows >= len(darker), 30, "the darker images logged")
    monitoring = load_config(
        REPO / CONFIG,
        [*settings, "monitor.min_window=30", "monitor.on_drift=retrain", f"monitor.retrain_data={training_dir}"],
    )

    # paced as the README's test paces its loop: each request costs the 2 cores about 75 ms of
    # CPU across Serve's tiers, taken from the retraining job beside it
    with RequestLoop(url, darker[0].read_bytes(), clients=2, pause_s=0.5) as loop:
        checked = check(monitoring, WindowSource(log=str(log)), "champion")
        action = respond(monitoring, checked, Targets(jobs_address=ray_head))
        assert checked.decision.status == "drift" and "input_mean[0]" in checked.decision.fired, checked.summary()
        assert "embedding" in {item.name for item in checked.decision.checks}  # the log kept the embeddings
        submission = action.removeprefix("retraining submitted: ").split()[0]
        jobs = JobSubmissionClient(ray_head)
        wait_until(lambda: jobs.get_job_status(submission) in TERMINAL, 600, "the retraining job", interval_s=2)
        assert jobs.get_job_status(submission) == JobStatus.SUCCEEDED, jobs.get_job_logs(submission)[-3000:]
        promoted = registry.find(uri, LOOP, registry.CHAMPION).version
        assert promoted != champion, jobs.get_job_logs(submission)[-3000:]
        wait_until(lambda: promoted in loop.versions()[-3:], 60, f"the service answering with version {promoted}")
    assert loop.failures == [] and {champion, promoted} <= set(loop.versions())
