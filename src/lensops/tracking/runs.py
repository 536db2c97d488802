"""The one module that writes to MLflow tracking (runs, params, metrics, artifacts).

Every call names its run explicitly through ``MlflowClient`` (no global active run), so the
driver and Ray Train's rank-0 worker can log into the same run, and a restarted worker
continues that run instead of opening a new one.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT as DATASET_CONTEXT_TAG

from lensops.config import LensopsConfig, TrackingConfig
from lensops.data.validation import ValidationReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lensops.model.tasks import Report

LOCAL_STORE = Path("mlruns")
MAX_BATCH = 100
PARENT_TAG = "mlflow.parentRunId"


def resolve_uri(cfg: TrackingConfig) -> str:
    """Configured URI, else ``$MLFLOW_TRACKING_URI``, else a sqlite store under ./mlruns."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    LOCAL_STORE.mkdir(exist_ok=True)
    return f"sqlite:///{(LOCAL_STORE / 'mlflow.db').resolve()}"


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    mlflow_client = client(uri)
    existing = mlflow_client.get_experiment_by_name(name)
    if existing:
        return existing.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def start_run(
    uri: str,
    cfg: LensopsConfig,
    report: ValidationReport,
    commit: str,
    name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Open a run with the resolved config as params and the validation report as artifact;
    with ``parent_run_id`` it is nested under that run (a sweep trial, a pipeline step)."""
    tags = {
        "lensops.dataset_version": report.dataset_version,
        "lensops.task": cfg.model.task,
        "mlflow.source.git.commit": commit,
        **(tags or {}),
    }
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    run_id = create_run(uri, cfg.tracking.experiment, name, tags)
    mlflow_client = client(uri)
    log_params(uri, run_id, {**cfg.flat(), "dataset_version": report.dataset_version})
    mlflow_client.log_dict(run_id, cfg.model_dump(mode="json"), "config/resolved.yaml")
    mlflow_client.log_dict(run_id, report.model_dump(mode="json"), "data/validation.json")
    log_metrics(uri, run_id, {"data_kept_files": report.kept_files, "data_skipped_files": len(report.skipped)})
    log_dataset(uri, run_id, report)
    return run_id


def log_dataset(uri: str, run_id: str, report: ValidationReport) -> None:
    """The training data as the run's MLflow dataset input (what ``mlflow.log_input`` records):
    its version as the digest, its location as the source, images per split and class, licence."""
    profile = {"images_per_split": report.class_counts, "skipped_files": len(report.skipped), "licence": report.licence}
    dataset = Dataset(
        name=report.source.rstrip("/").rsplit("/", 1)[-1] or report.source,
        digest=report.dataset_version,
        source_type="s3" if report.source.startswith("s3://") else "local",
        source=json.dumps({"uri": report.source}),
        profile=json.dumps(profile),
    )
    client(uri).log_inputs(run_id, [DatasetInput(dataset, [InputTag(DATASET_CONTEXT_TAG, "training")])])


def create_run(uri: str, experiment: str, name: str | None, tags: dict[str, str]) -> str:
    return client(uri).create_run(experiment_id(uri, experiment), run_name=name, tags=tags).info.run_id


def find_run(uri: str, experiment: str, tags: dict[str, str]) -> str | None:
    """The newest run of ``experiment`` carrying all of ``tags``."""
    mlflow_client = client(uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return None
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow_client.search_runs(
        [found.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def set_status(uri: str, run_id: str, status: str) -> None:
    client(uri).update_run(run_id, status=status)


def children(uri: str, parent_run_id: str) -> list[Run]:
    """Runs nested under ``parent_run_id``, oldest first."""
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    return mlflow_client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    entries = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(entries), MAX_BATCH):
        client(uri).log_batch(run_id, params=entries[i : i + MAX_BATCH])


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    client(uri).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    stamp = _now_ms()
    entries = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
    client(uri).log_batch(run_id, metrics=entries)


def log_epoch(uri: str, run_id: str, metrics: dict[str, float], epoch: int) -> None:
    log_metrics(uri, run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)


def log_figure(uri: str, run_id: str, figure: Figure, path: str) -> None:
    client(uri).log_figure(run_id, figure, path)


def log_dict(uri: str, run_id: str, data: dict[str, Any], path: str) -> None:
    client(uri).log_dict(run_id, data, path)


def log_text(uri: str, run_id: str, text: str, path: str) -> None:
    client(uri).log_text(run_id, text, path)


def log_report(
    uri: str, run_id: str, report: Report, under: str = "", text: str = "evaluation/test_report.txt"
) -> None:
    """A task's report: its ``text``, figures and tables as artifacts of the run, ``under`` a folder."""
    prefix = f"{under.rstrip('/')}/" if under else ""
    log_text(uri, run_id, report.text, f"{prefix}{text}")
    for path, figure in report.figures.items():
        log_figure(uri, run_id, figure, f"{prefix}{path}")
    for path, table in report.tables.items():
        log_dict(uri, run_id, table, f"{prefix}{path}")


def log_directory(uri: str, run_id: str, directory: Path, artifact_path: str) -> str:
    """Upload a directory and return its artifact URI (the source of a model version)."""
    mlflow_client = client(uri)
    mlflow_client.log_artifacts(run_id, str(directory), artifact_path)
    return f"{mlflow_client.get_run(run_id).info.artifact_uri}/{artifact_path}"


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Close a run as FINISHED, FAILED or KILLED."""
    client(uri).set_terminated(run_id, status)


@contextmanager
def closing(uri: str, run_id: str) -> Iterator[str]:
    """Ends ``run_id`` FINISHED when the block succeeds, KILLED on Ctrl-C, FAILED otherwise."""
    try:
        yield run_id
    except KeyboardInterrupt:
        end_run(uri, run_id, "KILLED")
        raise
    except BaseException:
        end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id)


def download(uri: str, artifact_uri: str, destination: Path) -> Path:
    """Fetch artifacts into ``destination`` (works for file, S3 and server-proxied stores)."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=uri)
    return Path(local)


def _now_ms() -> int:
    return int(time.time() * 1000)
