"""``ray job submit`` against a real ``ray start --head`` node: training, champion/challenger,
``serve deploy`` and the retraining pipeline with the deployed service following the champion.

The submitted training job makes a deliberately weak model (one epoch at a tiny learning rate)
in the registry that ``test_training`` filled; evaluation must refuse to promote it. Pipeline
jobs then promote a better model (the service swaps under a request loop) and keep the
champion against a worse one or a failed step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from traffic import RequestLoop

from lensops.config import LensopsConfig
from lensops.runtime import free_port, serve_env
from lensops.tracking import registry, runs
from lensops.training.fit import TrainOutcome
from lensops.waiting import http_ok, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RELOAD_TOKEN = "job-test-token"
SERVE = [str(BIN / "serve")]
WATCH_S = 2


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
def ray_head(s3_server: str, mlflow_uri: str) -> Iterator[str]:
    """A separate single-node Ray cluster with the job server; yields its dashboard URL.

    Like a real head node, its environment names the tracking server and the reload token."""
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-head-")  # short: Ray puts sockets under it
    env = serve_env(  # as lensops.runtime.ensure_head starts a head
        {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "RAY_USAGE_STATS_ENABLED": "0",
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "LENSOPS_RELOAD_TOKEN": RELOAD_TOKEN,
        }
    )
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
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(ray_head: str, *entrypoint: str) -> subprocess.CompletedProcess:
    """``ray job submit`` of this repository as working dir; waits for the job to end."""
    command = [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(REPO), "--", *entrypoint]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


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


WEAK = ("train.epochs=1", "train.lr=0.000001", "train.warmup_epochs=0")
"""One epoch at a tiny learning rate: a model no better than chance."""


@pytest.fixture(scope="module")
def submitted_weak_version(
    ray_head: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig, tmp_path_factory
) -> str:
    work = tmp_path_factory.mktemp("job-work")
    sets = _sets(classification_cfg, work, "test-jobs", *WEAK)
    done = _submit(ray_head, "python", "ray_jobs/train.py", "--config", "configs/synthetic.yaml", *sets)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr)
    line = next(line for line in done.stdout.splitlines() if line.startswith("registered:"))
    return line.split(" version ")[1].split()[0]


def test_submitted_training_job_registers_a_new_challenger(
    submitted_weak_version: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig
) -> None:
    uri = classification_cfg.tracking.tracking_uri
    name = classification_cfg.tracking.registered_model
    assert int(submitted_weak_version) > int(classification_run.version)
    assert registry.find(uri, name, registry.CHALLENGER).version == submitted_weak_version


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
    )
    assert done.returncode == 0, done.stderr[-3000:]
    decision = json.loads(out.read_text())
    assert decision["promoted"] is False
    assert decision["challenger"]["version"] == submitted_weak_version
    assert decision["champion"]["version"] == classification_run.version
    assert decision["challenger"]["metrics"]["macro_f1"] < decision["champion"]["metrics"]["macro_f1"]
    assert "not more than margin" in decision["reason"]
    assert registry.find(uri, name, registry.CHAMPION).version == classification_run.version


@pytest.fixture(scope="module")
def deployed_service(
    ray_head: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig, tmp_path_factory
) -> str:
    """`serve deploy serve_config.yaml` on the head node, pointed at the test registry and
    following the champion (the shared fit, set here) every WATCH_S seconds; yields its URL."""
    uri, name = classification_cfg.tracking.tracking_uri, classification_run.model_name
    registry.set_alias(uri, name, registry.CHAMPION, classification_run.version)
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = config["applications"]
    app["args"]["overrides"] = [
        *app["args"]["overrides"],
        f"tracking.registered_model={classification_run.model_name}",
        f"serve.watch_interval_s={WATCH_S}",
    ]
    for deployment in app["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
    path = tmp_path_factory.mktemp("serve") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    deployed = subprocess.run([*SERVE, "deploy", str(path), "--address", ray_head], capture_output=True, text=True)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    url = f"http://127.0.0.1:{port}"

    def running() -> bool:
        status = subprocess.run([*SERVE, "status", "--address", ray_head], capture_output=True, text=True).stdout
        return "status: RUNNING" in status and http_ok(f"{url}/health")

    wait_until(running, 300, "the deployed application to run and answer /health", interval_s=3)
    return url


def test_serve_deploy_of_the_shipped_config_serves_the_champion(
    deployed_service: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig
) -> None:
    uri, name = classification_cfg.tracking.tracking_uri, classification_run.model_name
    registry.set_alias(uri, name, registry.CHAMPION, classification_run.version)
    reload = requests.post(
        f"{deployed_service}/reload-model", headers={"Authorization": f"Bearer {RELOAD_TOKEN}"}, timeout=60
    )
    assert reload.json()["new_version"] == classification_run.version
    image = next((Path(classification_cfg.data.source) / "dusty").glob("*.png"))
    answer = requests.post(f"{deployed_service}/predict", files={"file": (image.name, image.read_bytes())}, timeout=60)
    assert answer.json()["model"]["version"] == classification_run.version
    assert answer.json()["model"]["alias"] == "champion"


GOOD = (
    "model.architecture=timm:tf_efficientnet_lite0",
    "model.weights=efficientnet-lite0",
    "preprocess.image_size=48",
    "train.num_workers=1",
    "train.batch_size=16",
    "train.epochs=2",
    "train.warmup_epochs=0",
)
"""Fine-tuning pretrained Lite0 briefly: far better than the weak model."""


def _pipeline(ray_head: str, cfg: LensopsConfig, work: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = _sets(cfg, work, "test-pipeline", *extra)
    return _submit(ray_head, "python", "ray_jobs/pipeline.py", "--config", "configs/synthetic.yaml", *sets)


def _field(output: str, prefix: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(prefix)).removeprefix(prefix).strip()


def _serving(url: str) -> str:
    return requests.get(f"{url}/model", timeout=30).json()["version"]


def test_pipeline_promotes_a_better_model_and_the_service_follows(
    deployed_service: str,
    ray_head: str,
    submitted_weak_version: str,
    classification_cfg: LensopsConfig,
    tmp_path: Path,
) -> None:
    uri, name = classification_cfg.tracking.tracking_uri, classification_cfg.tracking.registered_model
    registry.set_alias(uri, name, registry.CHAMPION, submitted_weak_version)
    _wait_until_serving(deployed_service, submitted_weak_version)
    image = next((Path(classification_cfg.data.source) / "dusty").glob("*.png")).read_bytes()
    with RequestLoop(deployed_service, image, clients=2) as loop:
        done = _pipeline(ray_head, classification_cfg, tmp_path, *GOOD)
        finished = time.monotonic()
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        new = _field(done.stdout, "champion: version")
        assert _field(done.stdout, "decision:").startswith("promoted")
        switched = _wait_until_serving(deployed_service, new)
        time.sleep(1)
    assert switched - finished <= WATCH_S + 15  # the watch interval plus loading the new version
    assert loop.failures == []
    versions = loop.versions()
    assert versions[0] == submitted_weak_version and versions[-1] == new
    assert registry.find(uri, name, registry.CHAMPION).version == new
    pipeline = runs.client(uri).get_run(_field(done.stdout, "pipeline_run_id:"))
    assert pipeline.info.status == "FINISHED" and pipeline.data.metrics["promoted"] == 1.0
    assert {pipeline.data.tags[f"lensops.step.{s}"] for s in ("validate", "train", "evaluate")} == {"ok"}
    (trained,) = runs.children(uri, pipeline.info.run_id)
    assert registry.find(uri, name, new).run_id == trained.info.run_id


def test_pipeline_keeps_the_champion_when_the_new_model_is_worse(
    deployed_service: str, ray_head: str, classification_cfg: LensopsConfig, tmp_path: Path
) -> None:
    uri, name = classification_cfg.tracking.tracking_uri, classification_cfg.tracking.registered_model
    champion = registry.find(uri, name, registry.CHAMPION).version
    done = _pipeline(ray_head, classification_cfg, tmp_path, *WEAK)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _field(done.stdout, "decision:").startswith("kept")
    assert _field(done.stdout, "champion: version") == champion
    assert registry.find(uri, name, registry.CHAMPION).version == champion
    time.sleep(WATCH_S + 1)
    assert _serving(deployed_service) == champion


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


def _wait_until_serving(url: str, version: str, timeout_s: float = 120) -> float:
    wait_until(lambda: _serving(url) == version, timeout_s, f"the service to answer with version {version}")
    return time.monotonic()
