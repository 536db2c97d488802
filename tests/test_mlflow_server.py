"""MLflow as a real server: PostgreSQL for runs and the registry, the loopback S3 for artifacts.

Debian's PostgreSQL is started on loopback for this module (``make test`` installs it when
missing) and ``mlflow server`` proxies artifacts to a bucket of the moto S3 server. A model is
then trained, registered, promoted and served through that server alone, and the service lives
through the server's outages: stopped while it serves, and stopped before it starts.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from conftest import synthetic_config
from ray import serve
from shell import user_env

from lensops.config import LensopsConfig
from lensops.runtime import free_port
from lensops.serving.app import build, run_local
from lensops.tracking import registry
from lensops.tracking.promotion import evaluate_and_promote
from lensops.training.fit import TrainOutcome, fit
from lensops.waiting import http_ok, wait_until

pytestmark = pytest.mark.slow

BUCKET = "lensops-mlflow"
MODEL = "test-server"


def _s3():
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    assert found, f"PostgreSQL's {name} is missing: `make test` installs Debian's postgresql"
    return found


def _as_postgres(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: drop to its system user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback; yields the SQLAlchemy URI of database mlflow.

    Its data directory is not under pytest's root-only temp folder: the postgres user owns it."""
    data = Path(tempfile.mkdtemp(prefix="lensops-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True}
    subprocess.run(_as_postgres(_postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"), **run)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    pg_ctl = _postgres_bin("pg_ctl")
    subprocess.run(_as_postgres(pg_ctl, "-D", str(data), "-o", options, "-w", "-l", f"{data}/log", "start"), **run)
    try:
        createdb = [_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]
        subprocess.run(_as_postgres(*createdb), **run)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on PostgreSQL with artifacts proxied to the S3 bucket; stops and starts
    again on the same port and stores, as an outage of the real thing would."""

    def __init__(self, postgres: str, env: dict[str, str], log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.command = [
            *(str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", postgres),
            *("--artifacts-destination", f"s3://{BUCKET}/artifacts", "--workers", "1"),
            *("--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1]),
        ]
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._up, 120, "a healthy mlflow server")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and its workers
        self.process.wait(timeout=60)

    def _up(self) -> bool:
        assert self.process.poll() is None, f"mlflow server exited:\n{self.log.read_text()[-3000:]}"
        return http_ok(f"{self.url}/health", timeout_s=2)


@pytest.fixture(scope="module")
def mlflow_server(
    postgres: str, s3_server: str, aws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    _s3().create_bucket(Bucket=BUCKET)
    env = user_env(**aws_env, MLFLOW_S3_ENDPOINT_URL=s3_server)
    server = MlflowServer(postgres, env, tmp_path_factory.mktemp("mlflow-server") / "server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server_cfg(mlflow_server: MlflowServer, training_dir: Path, tmp_path_factory) -> LensopsConfig:
    cfg = synthetic_config(
        training_dir,
        mlflow_server.url,
        tmp_path_factory.mktemp("work-server"),
        "tracking.experiment=test-server",
        f"tracking.registered_model={MODEL}",
        "model.architecture=timm:tf_efficientnet_lite0",
        "model.weights=efficientnet-lite0",
        "preprocess.image_size=48",
        "train.num_workers=1",
        "train.batch_size=16",
        "train.epochs=1",  # the first version is promoted whatever it scores: the server is under test
        "train.warmup_epochs=0",
        "serve.watch_interval_s=1",
        "serve.watch_max_backoff_s=2",
        "serve.max_replicas=1",
    )
    return cfg


@pytest.fixture(scope="module")
def champion(ray_cluster: None, server_cfg: LensopsConfig) -> TrainOutcome:
    outcome = fit(server_cfg)
    decision = evaluate_and_promote(server_cfg)
    assert decision.promoted
    return outcome


@pytest.fixture(scope="module")
def service(champion: TrainOutcome, server_cfg: LensopsConfig) -> Iterator[str]:
    yield run_local(server_cfg, port=free_port())
    serve.shutdown()


def _health(url: str) -> requests.Response:
    return requests.get(f"{url}/health", timeout=30)


def _predict(url: str, training_dir: Path) -> requests.Response:
    image = next((training_dir / "dusty").glob("*.png"))
    return requests.post(f"{url}/predict", files={"file": (image.name, image.read_bytes())}, timeout=60)


def test_train_register_promote_and_serve_through_the_server(
    service: str, champion: TrainOutcome, mlflow_server: MlflowServer, postgres: str, training_dir: Path
) -> None:
    assert registry.find(mlflow_server.url, MODEL, registry.CHAMPION).version == champion.version
    answer = _predict(service, training_dir).json()
    assert answer["model"]["version"] == champion.version and answer["prediction"] in ("clean", "dusty")

    # the artifacts are objects in the bucket, the registry rows are in PostgreSQL
    keys = [o["Key"] for o in _s3().list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(key.endswith(f"{champion.run_id}/artifacts/model/model.safetensors") for key in keys)
    port = postgres.rsplit(":", 1)[1].split("/")[0]
    query = f"select count(*) from model_versions where name = '{MODEL}'"
    psql = [_postgres_bin("psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "mlflow", "-tAc", query]
    count = subprocess.run(_as_postgres(*psql), capture_output=True, text=True, check=True).stdout.strip()
    assert count == "1"


def test_with_the_registry_down_the_loaded_version_keeps_answering_and_health_is_degraded(
    service: str, champion: TrainOutcome, mlflow_server: MlflowServer, training_dir: Path
) -> None:
    mlflow_server.stop()
    try:
        degraded = wait_until(
            lambda: (health := _health(service).json())["status"] == "degraded" and health, 60, "degraded health"
        )
        assert degraded["version"] == champion.version
        assert degraded["reason"].startswith("registry_unavailable: ")
        answer = _predict(service, training_dir)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == champion.version
    finally:
        mlflow_server.start()
    wait_until(lambda: _health(service).json()["status"] == "ok", 60, "health ok once the registry is back")


def test_started_with_the_registry_down_the_service_answers_503_until_it_returns(
    service: str, champion: TrainOutcome, mlflow_server: MlflowServer, server_cfg: LensopsConfig, training_dir: Path
) -> None:
    url = f"{service}/outage"
    mlflow_server.stop()
    try:
        serve.run(build(server_cfg), name="outage", route_prefix="/outage")
        unavailable = wait_until(
            lambda: (health := _health(url)).status_code == 503 and "waiting for" not in health.text and health.json(),
            120,
            "503 from the health check, after the first try to read the registry",
        )
        assert unavailable["status"] == "unavailable"
        assert unavailable["reason"].startswith("registry_unavailable: "), unavailable
        refused = _predict(url, training_dir)
        assert refused.status_code == 503 and refused.json()["error"] == "model_unavailable"
        assert "registry_unavailable" in refused.json()["detail"] and refused.headers["Retry-After"] == "5"
    finally:
        mlflow_server.start()
    wait_until(lambda: http_ok(f"{url}/health"), 120, "the model loaded once the registry is back")
    assert _predict(url, training_dir).json()["model"]["version"] == champion.version
    serve.delete("outage")
