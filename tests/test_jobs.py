"""``ray job submit`` against a real ``ray start --head`` node, then champion/challenger.

The submitted job trains a deliberately weak model (one epoch at a tiny learning rate) into
the registry that ``test_training`` filled; evaluation must then refuse to promote it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from lensops import registry
from lensops.config import LensopsConfig
from lensops.train import TrainOutcome

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RELOAD_TOKEN = "job-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_dashboard(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:  # answering (e.g. 401 under Ray's token auth) means up
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray dashboard at {url} did not come up in {timeout_s}s")


@pytest.fixture(scope="module")
def ray_head(s3_server: str, mlflow_uri: str) -> Iterator[str]:
    """A separate single-node Ray cluster with the job server; yields its dashboard URL.

    Like a real head node, its environment names the tracking server and the reload token."""
    dashboard = _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "LENSOPS_RELOAD_TOKEN": RELOAD_TOKEN,
    }
    process = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={_free_port()}",
            "--num-cpus=4",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            # every agent port explicit: the test session's own Ray already holds the defaults
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(url, process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def submitted_weak_version(
    ray_head: str, classification_run: TrainOutcome, classification_cfg: LensopsConfig, tmp_path_factory
) -> str:
    work = tmp_path_factory.mktemp("job-work")
    command = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head,
        "--working-dir",
        str(REPO),
        "--",
        "python",
        "ray_jobs/train.py",
        "--config",
        "configs/synthetic.yaml",
        "--set",
        f"data.source={classification_cfg.data.source}",
        "--set",
        f"data.work_dir={work}",
        "--set",
        f"tracking.tracking_uri={classification_cfg.tracking.tracking_uri}",
        "--set",
        "tracking.experiment=test-jobs",
        "--set",
        f"tracking.registered_model={classification_cfg.tracking.registered_model}",
        "--set",
        "train.epochs=1",
        "--set",
        "train.lr=0.000001",
        "--set",
        "train.warmup_epochs=0",
    ]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
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


def test_serve_deploy_of_the_shipped_config_serves_the_champion(
    ray_head: str,
    submitted_weak_version: str,
    classification_run: TrainOutcome,
    classification_cfg: LensopsConfig,
    tmp_path: Path,
) -> None:
    """`serve deploy serve_config.yaml` on a head node, pointed at the test registry."""
    uri, name = classification_cfg.tracking.tracking_uri, classification_run.model_name
    registry.set_alias(uri, name, registry.CHAMPION, classification_run.version)
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    port = _free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = config["applications"]
    app["args"]["overrides"] = [*app["args"]["overrides"], f"tracking.registered_model={classification_run.model_name}"]
    for deployment in app["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_cli = [str(BIN / "serve")]
    deployed = subprocess.run([*serve_cli, "deploy", str(path), "--address", ray_head], capture_output=True, text=True)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    status = ""
    while time.monotonic() < deadline:
        status = subprocess.run([*serve_cli, "status", "--address", ray_head], capture_output=True, text=True).stdout
        if "status: RUNNING" in status and _healthy(url):
            break
        time.sleep(3)
    else:
        raise AssertionError(f"application never became healthy:\n{status}")
    image = next((Path(classification_cfg.data.source) / "dusty").glob("*.png"))
    answer = requests.post(f"{url}/predict", files={"file": (image.name, image.read_bytes())}, timeout=60).json()
    assert answer["model"]["version"] == classification_run.version
    assert answer["model"]["alias"] == "champion"
    reload = requests.post(f"{url}/reload-model", headers={"Authorization": f"Bearer {RELOAD_TOKEN}"}, timeout=60)
    assert reload.json()["new_version"] == classification_run.version


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            return response.status == 200
    except OSError:
        return False
