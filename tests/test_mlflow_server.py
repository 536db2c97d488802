"""MLflow as a real server: PostgreSQL for runs and the registry, the loopback S3 for artifacts.

Debian's PostgreSQL is started on loopback for this module (``make test`` installs it when
missing) and ``mlflow server`` proxies artifacts to a bucket of the moto S3 server. A model is
then trained, registered, promoted and served through that server alone.
"""

from __future__ import annotations

import glob
import os
import shutil
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

from lensops.runtime import free_port
from lensops.serving.app import run_local
from lensops.tracking import registry
from lensops.tracking.promotion import evaluate_and_promote
from lensops.training.fit import fit
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


@pytest.fixture(scope="module")
def mlflow_server(postgres: str, s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _s3().create_bucket(Bucket=BUCKET)
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_server}
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        postgres,
        "--artifacts-destination",
        f"s3://{BUCKET}/artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    def up() -> bool:
        assert process.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        return http_ok(f"{url}/health", timeout_s=2)

    wait_until(up, timeout_s, "a healthy mlflow server")


def test_train_register_promote_and_serve_through_the_server(
    ray_cluster: None, mlflow_server: str, postgres: str, training_dir: Path, tmp_path_factory
) -> None:
    cfg = synthetic_config(
        training_dir,
        mlflow_server,
        tmp_path_factory.mktemp("work-server"),
        "tracking.experiment=test-server",
        f"tracking.registered_model={MODEL}",
        "model.architecture=timm:tf_efficientnet_lite0",
        "model.weights=efficientnet-lite0",
        "preprocess.image_size=48",
        "train.num_workers=1",
        "train.batch_size=16",
        "train.epochs=2",
        "train.warmup_epochs=0",
    )
    outcome = fit(cfg)
    decision = evaluate_and_promote(cfg)
    assert decision.promoted and registry.find(mlflow_server, MODEL, registry.CHAMPION).version == outcome.version

    url = run_local(cfg, port=free_port())
    try:
        image = next((training_dir / "dusty").glob("*.png"))
        answer = requests.post(f"{url}/predict", files={"file": (image.name, image.read_bytes())}, timeout=60).json()
    finally:
        serve.shutdown()
    assert answer["model"]["version"] == outcome.version and answer["prediction"] in ("clean", "dusty")

    # the artifacts are objects in the bucket, the registry rows are in PostgreSQL
    keys = [o["Key"] for o in _s3().list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(key.endswith(f"{outcome.run_id}/artifacts/model/model.safetensors") for key in keys)
    port = postgres.rsplit(":", 1)[1].split("/")[0]
    query = f"select count(*) from model_versions where name = '{MODEL}'"
    psql = [_postgres_bin("psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "mlflow", "-tAc", query]
    count = subprocess.run(_as_postgres(*psql), capture_output=True, text=True, check=True).stdout.strip()
    assert count == "1"
