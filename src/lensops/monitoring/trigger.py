"""What the monitor does with a decision: publish it to Prometheus, and on drift tell a person
or start a retraining.

- **Publish.** A monitor pass is a job, not a server Prometheus could scrape, so its gauges go
  to a Pushgateway (``--pushgateway``; one in the compose stack), grouped by model, where
  Prometheus scrapes them and the ``LensopsDriftDetected`` rule reads them.
- **notify** posts an alert straight to Alertmanager's API (``--alertmanager``), which routes
  it to the receivers ``lensops alertmanager-config`` set up: no Prometheus needed between.
- **retrain** submits the pipeline job (validate, train, evaluate, promote) to the Ray
  cluster through the Ray Jobs API, on ``monitor.retrain_data`` (plus the logged uploads that
  got a label as feedback, when the service keeps uploads: :func:`training_data`). The
  resolved config travels as the job's working directory. The service picks up a promoted
  champion through its alias watch. The submission id is a tag of the monitor's MLflow run, and those tags are the
  cooldown's memory: no second submission within ``monitor.cooldown_h``, whichever machine
  the monitor runs on.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import requests
import yaml

from lensops.config import LensopsConfig
from lensops.data import storage
from lensops.data.sources import list_files
from lensops.monitoring.feedback import joined
from lensops.monitoring.monitor import STAGE, Checked
from lensops.monitoring.targets import Targets
from lensops.tracking import runs

SUBMISSION_TAG = "lensops.retrain_submission"
RETRAINED_TAG = "lensops.retrained"
ALERT = "LensopsDriftDetected"


def respond(cfg: LensopsConfig, checked: Checked, targets: Targets) -> str:
    """Act on a decision as ``monitor.on_drift`` says, publish it, and say what was done."""
    action = "no action"
    if checked.decision.status == "drift":
        action = {
            "dry-run": lambda: "dry-run: nothing sent, nothing submitted",
            "notify": lambda: _notify(checked, targets.alertmanager or ""),
            "retrain": lambda: retrain(cfg, checked, targets.jobs_address),
        }[cfg.monitor.on_drift]()
    if targets.pushgateway:
        previous = last_retrain(cfg)
        publish(checked, targets.pushgateway, previous.timestamp() if previous else None)
    return action


def _notify(checked: Checked, alertmanager: str) -> str:
    notify(checked, alertmanager)
    return f"alert {ALERT} sent to {alertmanager}"


GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lensops_drift_score": ("Test statistic of each drift check", ("check",)),
    "lensops_drift_p_value": ("Holm-adjusted p-value of each drift check", ("check",)),
    "lensops_drift_decision": ("1 for the status the last pass decided, 0 for the others", ("status",)),
    "lensops_drift_detected": ("1 when the last pass decided drift", ()),
    "lensops_drift_window_images": ("Images in the last pass's window", ()),
    "lensops_drift_last_check_timestamp_seconds": ("When the monitor last decided", ()),
    "lensops_drift_last_retrain_timestamp_seconds": ("When drift last submitted a retraining", ()),
}
"""What a monitor pass pushes (besides the Pushgateway's ``job`` and the ``model`` group label)."""
STATUSES = ("drift", "ok", "insufficient_data")


def publish(checked: Checked, gateway: str, last_retrain: float | None) -> None:
    """Push the decision's gauges to a Prometheus Pushgateway, replacing the model's last push."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    gauges = {name: Gauge(name, text, labels, registry=registry) for name, (text, labels) in GAUGES.items()}
    decision = checked.decision
    for item in decision.checks:
        gauges["lensops_drift_score"].labels(item.name).set(item.statistic)
        gauges["lensops_drift_p_value"].labels(item.name).set(item.adjusted_p)
    for status in STATUSES:
        gauges["lensops_drift_decision"].labels(status).set(float(decision.status == status))
    gauges["lensops_drift_detected"].set(float(decision.status == "drift"))
    gauges["lensops_drift_window_images"].set(decision.window)
    gauges["lensops_drift_last_check_timestamp_seconds"].set(time.time())
    if last_retrain is None:
        registry.unregister(gauges["lensops_drift_last_retrain_timestamp_seconds"])  # never: no sample at all
    else:
        gauges["lensops_drift_last_retrain_timestamp_seconds"].set(last_retrain)
    grouping = {"model": checked.version.name}
    push_to_gateway(gateway, job="lensops-monitor", grouping_key=grouping, registry=registry, timeout=10)


def notify(checked: Checked, alertmanager: str) -> None:
    """Post the drift as an alert to Alertmanager (API v2), which routes it to a person."""
    alert = {
        "labels": {
            "alertname": ALERT,
            "severity": "warning",
            "model": checked.version.name,
            "version": checked.version.version,
        },
        "annotations": {
            "summary": f"{checked.version.name} v{checked.version.version}: {checked.decision.line()}",
            "mlflow_run": checked.run_id,
        },
    }
    response = requests.post(f"{alertmanager.rstrip('/')}/api/v2/alerts", json=[alert], timeout=10)
    response.raise_for_status()


def last_retrain(cfg: LensopsConfig) -> datetime | None:
    """When a monitor last submitted a retraining of this model (from MLflow), if ever."""
    uri = runs.resolve_uri(cfg.tracking)
    tags = {"lensops.stage": STAGE, RETRAINED_TAG: cfg.tracking.registered_model}
    run_id = runs.find_run(uri, cfg.tracking.experiment, tags)
    if run_id is None:
        return None
    return datetime.fromtimestamp(runs.client(uri).get_run(run_id).info.start_time / 1000, UTC)


def retrain(cfg: LensopsConfig, checked: Checked, jobs_address: str) -> str:
    """Submit the pipeline job on ``monitor.retrain_data``, unless one was submitted within the
    cooldown; the returned line says which happened (settings checked by :func:`require`)."""
    previous = last_retrain(cfg)
    if previous is not None:
        hours = (datetime.now(UTC) - previous).total_seconds() / 3600
        cooldown = cfg.monitor.cooldown_h
        if hours < cooldown:
            return f"cooldown: a retraining was submitted {hours:.1f} h ago (monitor.cooldown_h={cooldown:g})"
    data = training_data(cfg)
    submission = submit_pipeline(cfg, data, jobs_address)
    uri = runs.resolve_uri(cfg.tracking)
    runs.set_tags(uri, checked.run_id, {SUBMISSION_TAG: submission, RETRAINED_TAG: cfg.tracking.registered_model})
    return f"retraining submitted: {submission} (pipeline on {data})"


def submit_pipeline(cfg: LensopsConfig, data: str, jobs_address: str) -> str:
    """The pipeline job training on ``data``, through the Ray Jobs API; its submission id."""
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory(prefix="lensops-retrain-") as folder:
        (Path(folder) / "config.yaml").write_text(yaml.safe_dump(_portable(cfg, data), sort_keys=False))
        return JobSubmissionClient(jobs_address).submit_job(
            entrypoint="python -m lensops.cli pipeline --config config.yaml",
            runtime_env={"working_dir": folder},
            metadata={"lensops.trigger": "drift", "lensops.model": cfg.tracking.registered_model},
        )


def training_data(cfg: LensopsConfig) -> str:
    """``monitor.retrain_data``, or, when the service keeps its uploads (``serve.log_images``)
    and some got a label as feedback, a manifest of both: the retrain data's files and those
    uploads with the label they were given (``<data.work_dir>/monitor/retrain-<time>/``)."""
    data = cfg.monitor.retrain_data or ""
    log = cfg.serve.log_path
    if not (cfg.serve.log_images and log and cfg.data.target_column is None):
        return data
    labelled = [(row["path"], row["truth"]) for row in joined(log) if row["path"] and isinstance(row["truth"], str)]
    if not labelled:
        return data
    files = list_files(_absolute(data))[["path", "label"]]
    merged = pd.concat([files, pd.DataFrame(labelled, columns=["path", "label"])], ignore_index=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    manifest = storage.join(_absolute(cfg.data.work_dir), "monitor", f"retrain-{stamp}", "manifest.csv")
    fs, path = storage.resolve(manifest)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(merged.to_csv(index=False).encode())
    return manifest


def _portable(cfg: LensopsConfig, data: str) -> dict:
    """The pipeline's config as it reads in the job's own working directory: ``data`` as its
    source, and local paths and the tracking store made absolute."""
    located = {"source": _absolute(data), "work_dir": _absolute(cfg.data.work_dir)}
    training = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update=located),
            "tracking": cfg.tracking.model_copy(update={"tracking_uri": runs.resolve_uri(cfg.tracking)}),
        }
    )
    return training.model_dump(mode="json")


def _absolute(location: str) -> str:
    return location if "://" in location else str(Path(location).resolve())
