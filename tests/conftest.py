"""Shared session fixtures: a real local Ray, a real S3 (moto server on loopback), sample data.

Ray worker processes inherit the environment of the process that starts Ray, and only at
that moment. The S3 endpoint therefore has to be known, and exported, before Ray starts:
``s3_server`` starts moto on a port the kernel picks (no race for a "free" port) and sets
the AWS variables, and ``ray_cluster`` depends on it so that every Ray worker can reach it
through :func:`lensops.storage.s3_filesystem`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray
import shell

from lensops.config import DataConfig, LensopsConfig, load_config
from lensops.data import samples
from lensops.data.catalog import Catalog, build_catalog
from lensops.runtime import serve_env
from lensops.training.fit import TrainOutcome, fit
from lensops.waiting import wait_until

BEFORE = pytest.StashKey[tuple[set[int], set[str]]]()
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SYNTHETIC_COUNT = 60
SYNTHETIC_SIZE = 48
BAD_COUNT = 30


SUITE_PROCESSES = ("haproxy", "raylet", "gcs_server")
SUITE_FOLDERS = (
    *("/tmp/lensops-hap-*", "/tmp/haproxy-serve/*"),  # HAProxy's state: lensops' temp dirs, Ray's default
    *("/tmp/lt-*", "/tmp/ray/session_2*"),  # the suite's Ray temp dirs, Ray's default
)


def _process_line(pid: int, entry: str) -> str:
    try:
        return Path(f"/proc/{pid}/{entry}").read_text().replace("\0", " ").strip()
    except OSError:  # ended meanwhile
        return ""


def _suite_state() -> tuple[set[int], set[str]]:
    """Ray's and HAProxy's processes alive now, and the folders clusters leave behind."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    processes = {pid for pid in pids if _process_line(pid, "comm") in SUITE_PROCESSES}
    return processes, {path for pattern in SUITE_FOLDERS for path in glob.glob(pattern)}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[BEFORE] = _suite_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Nothing the suite started outlives it: no Ray or HAProxy process, no temp folder."""
    shutil.rmtree(shell.TMPDIR, ignore_errors=True)
    processes, folders = session.config.stash[BEFORE]
    with contextlib.suppress(TimeoutError):  # ending takes Ray a moment; what is left after is reported
        wait_until(lambda: not (_suite_state()[0] - processes), 30, "the suite's processes to end", interval_s=1)
    now_processes, now_folders = _suite_state()
    left_processes, left_folders = now_processes - processes, now_folders - folders
    if left_processes or left_folders:
        alive = [f"{pid} {_process_line(pid, 'cmdline')[:160]}" for pid in sorted(left_processes)]
        report = "\n  ".join(["the test session left behind:", *alive, *sorted(left_folders)])
        session.config.get_terminal_writer().line(report, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    # Notices from inside Ray about its own API and pandas use, not about lensops code.
    for line in (
        "ignore::DeprecationWarning:ray.*",
        "ignore:The maximum number of concurrent tasks:UserWarning",
        "ignore:The inplace keyword in DataFrame.reset_index:DeprecationWarning",
    ):
        config.addinivalue_line("filterwarnings", line)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def aws_env(s3_server: str) -> dict[str, str]:
    """The AWS variables that point at ``s3_server``, for subprocesses that need the bucket."""
    return {name: os.environ[name] for name in AWS_VARIABLES}


AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with the AWS environment pointing at it; yields the URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    wait_until(lambda: _port_open(host, port), 10, f"the S3 server on port {port}", interval_s=0.05)
    endpoint = f"http://{host}:{port}"
    no_aws_files = tmp_path_factory.mktemp("aws") / "absent"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(no_aws_files),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_aws_files),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def ray_temp() -> Iterator[Path]:
    """The folder of the session Ray's files and HAProxy's state, removed after it."""
    temp = Path(tempfile.mkdtemp(prefix="lt-ray-"))  # short: Ray puts sockets under it
    yield temp
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(s3_server: str, ray_temp: Path) -> Iterator[None]:
    """A real local Ray; started after ``s3_server`` so its workers inherit the AWS settings."""
    if ray.is_initialized():
        ray.shutdown()
    _start_ray(ray_temp)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_logs(ray_cluster: None, ray_temp: Path) -> Path:
    """Where Serve's controller and replicas on the session's Ray write their logs."""
    return ray_temp / "ray" / "session_latest" / "logs" / "serve"


def _start_ray(temp: Path, attempts: int = 3) -> None:
    # 8 logical CPUs on a 2-core machine on purpose: Ray Data and Serve replicas get slots beside
    # Train workers. Ray waits a fixed 30 s for its raylet; on a saturated shared machine that can
    # run out, so a failed start is retried rather than failing the whole session. Serve runs on
    # the same throughput path (HAProxy, direct ingress, 127.0.0.1) as a Ray that lensops starts.
    (temp / "h").mkdir()  # short: HAProxy's socket paths end at 97 characters
    os.environ.update(serve_env(os.environ, state_dir=temp / "h"))
    # Tasks defined in the test suite (toy_task.py) are importable on every worker, as a user's
    # own task module is when installed on the cluster or shipped in the job's working dir.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                address="local",
                num_cpus=8,
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=str(temp / "ray"),
                object_store_memory=512 * 1024**2,
            )
            return
        except Exception:
            ray.shutdown()
            if attempt == attempts:
                raise


@pytest.fixture(scope="session")
def s3_upload(s3_server: str) -> Callable[[Path, str, str], str]:
    """Upload every file under a local folder to ``s3://<bucket>/<prefix>/``; returns the URI."""
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    def upload(local: Path, bucket: str, prefix: str) -> str:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
        return f"s3://{bucket}/{prefix}"

    return upload


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 clean + 60 dusty 48x48 PNGs and a manifest.csv with ``dust_level``; read-only."""
    out = tmp_path_factory.mktemp("synthetic")
    samples.write_synthetic(out, count_per_class=SYNTHETIC_COUNT, size=SYNTHETIC_SIZE, seed=0)
    return out


@pytest.fixture(scope="session")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 images per class plus the planted bad files of ``add_bad_files``; read-only."""
    out = tmp_path_factory.mktemp("bad")
    samples.write_synthetic(out, count_per_class=BAD_COUNT, size=SYNTHETIC_SIZE, seed=0)
    samples.add_bad_files(out)
    return out


@pytest.fixture(scope="session")
def synthetic_catalog(ray_cluster: None, synthetic_dir: Path) -> Catalog:
    return build_catalog(DataConfig(source=str(synthetic_dir)))


@pytest.fixture(scope="session")
def bad_catalog(ray_cluster: None, bad_dir: Path) -> Catalog:
    return build_catalog(DataConfig(source=str(bad_dir)))


@pytest.fixture(scope="session")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Write a small synthetic export (8 images per class, 40 px) into a fresh folder."""

    def export(name: str = "export", seed: int = 0, count: int = 8) -> Path:
        out = tmp_path_factory.mktemp(name)
        samples.write_synthetic(out, count_per_class=count, size=40, seed=seed)
        return out

    return export


# ---- shared training run: one Ray Train fit serves every test that needs a model ----------

EPOCHS = 8
FAIL_AT = 3


@pytest.fixture(scope="session")
def training_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-data")
    samples.write_synthetic(out, count_per_class=200, size=64, seed=1)
    return out


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def synthetic_config(training_dir: Path, mlflow_uri: str, work_dir: Path, *overrides: str) -> LensopsConfig:
    return load_config(
        REPO / "configs" / "synthetic.yaml",
        [
            f"data.source={training_dir}",
            f"data.work_dir={work_dir}",
            f"tracking.tracking_uri={mlflow_uri}",
            "tracking.experiment=test-classification",
            "tracking.registered_model=test-dust",
            f"serve.log_path={work_dir / 'prediction-log'}",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def classification_cfg(training_dir: Path, mlflow_uri: str, tmp_path_factory) -> LensopsConfig:
    return synthetic_config(
        training_dir,
        mlflow_uri,
        tmp_path_factory.mktemp("work"),
        f"train.epochs={EPOCHS}",
        f"train.fail_at_epoch={FAIL_AT}",
        "train.max_failures=1",
    )


@pytest.fixture(scope="session")
def classification_run(ray_cluster: None, classification_cfg: LensopsConfig) -> TrainOutcome:
    return fit(classification_cfg)
