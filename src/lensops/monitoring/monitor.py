"""``lensops monitor``: check a window of new data for drift against a registered version's
reference profile, and record the decision.

The window is either a stretch of the prediction log (the version's records between two
days, with the feedback they got) or a folder / ``s3://`` prefix of new images, scored
through the batch path with embeddings (into ``<data.work_dir>/monitor/scored/``, so that a
second check of the same images scores nothing twice). The decision
(:mod:`lensops.monitoring.drift`) is logged as an MLflow run ``monitor`` with its report and
plots; :mod:`lensops.monitoring.trigger` publishes it and acts on it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lensops.config import LensopsConfig
from lensops.model.artifact import ModelSpec
from lensops.monitoring import drift, drift_plots, feedback, store
from lensops.monitoring.drift import Decision
from lensops.monitoring.profile import Profile
from lensops.monitoring.window import Window
from lensops.scoring import parts
from lensops.scoring.batch import batch_predict
from lensops.tracking import registry, runs
from lensops.tracking.registry import RegisteredVersion

STAGE = "monitor"


@dataclass(frozen=True)
class WindowSource:
    """Where the window comes from: new images (``images``) or the prediction log."""

    images: str | None = None
    log: str | None = None
    since: date | None = None
    until: date | None = None

    def describe(self) -> str:
        if self.images:
            return self.images
        return f"{self.log} ({self.since or 'first day'}..{self.until or 'last day'})"


@dataclass
class Checked:
    """One monitor pass: the version checked, its decision and the MLflow run it is in."""

    version: RegisteredVersion
    source: WindowSource
    decision: Decision
    run_id: str = ""

    def summary(self) -> dict[str, Any]:
        model = {"name": self.version.name, "version": self.version.version}
        return {**self.decision.as_dict(), "model": model, "source": self.source.describe(), "mlflow_run": self.run_id}


def check(cfg: LensopsConfig, source: WindowSource, ref: str) -> Checked:
    """Compare the window with the profile of version ``ref`` (a number or an alias)."""
    uri = runs.resolve_uri(cfg.tracking)
    version = registry.require(uri, cfg.tracking.registered_model, ref)
    profile = registry.load_profile(uri, version)
    window = load_window(cfg, source, version, registry.load_spec(uri, version))
    checked = Checked(version, source, drift.decide(profile, window, cfg.monitor))
    checked.run_id = track(uri, cfg, checked, profile, window)
    return checked


def load_window(cfg: LensopsConfig, source: WindowSource, version: RegisteredVersion, spec: ModelSpec) -> Window:
    if source.images:
        return Window.from_records(_scored(cfg, source.images, version), spec)
    if source.log is None:
        raise ValueError("a window needs new images or a prediction log")
    return Window.from_records(_logged(source, version), spec, feedback.truths(source.log))


def _logged(source: WindowSource, version: RegisteredVersion) -> pa.Table:
    """The window's records of ``version``, one per request id (the earliest, as
    :func:`~lensops.monitoring.reading.read_predictions` keeps). A window is checked in this
    process, so it is read here, only the version's rows leaving the scan; Ray Data's parquet
    reader would start a pool of footer-reading actors for it, seconds each on a small node."""
    mine = (pc.field("model_name") == version.name) & (pc.field("model_version") == version.version)
    return store.unique(store.read(source.log, store.PREDICTIONS, source.since, source.until, where=mine))


def _scored(cfg: LensopsConfig, images: str, version: RegisteredVersion) -> pa.Table:
    """The batch records of ``images`` by ``version``, with embeddings."""
    place = hashlib.sha256(images.encode()).hexdigest()[:16]
    output = str(Path(cfg.data.work_dir).resolve() / "monitor" / "scored" / place)
    scoring = cfg.model_copy(
        update={"batch": cfg.batch.model_copy(update={"model": version.version, "embeddings": True})}
    )
    batch_predict(scoring, images, output)
    where = (pc.field("model_name") == version.name) & (pc.field("model_version") == version.version)
    return parts.read(output, where=where)


def track(uri: str, cfg: LensopsConfig, checked: Checked, profile: Profile, window: Window) -> str:
    """The MLflow run ``monitor``: the decision as metrics, ``monitor/decision.json`` and plots."""
    decision = checked.decision
    tags = {"lensops.stage": STAGE, "lensops.drift": decision.status}
    run_id = runs.create_run(uri, cfg.tracking.experiment, STAGE, tags)
    with runs.closing(uri, run_id):
        params = {"source": checked.source.describe(), "model_version": checked.version.version}
        runs.log_params(uri, run_id, params | {f"monitor.{k}": v for k, v in cfg.monitor.model_dump().items()})
        metrics = {"window": decision.window, "drift": float(decision.status == "drift")}
        for item in decision.checks:
            name = metric_name(item.name)
            metrics |= {
                f"{name}.statistic": item.statistic,
                f"{name}.p": item.p_value,
                f"{name}.adjusted_p": item.adjusted_p,
            }
        runs.log_metrics(uri, run_id, metrics)
        runs.log_dict(uri, run_id, checked.summary(), "monitor/decision.json")
        if decision.checks:
            with tempfile.TemporaryDirectory() as tmp:
                runs.log_directory(uri, run_id, drift_plots.save(profile, window, decision, Path(tmp)), "monitor/plots")
    return run_id


def metric_name(check: str) -> str:
    """A check's name as MLflow takes it (``input_mean[0]`` -> ``input_mean.0``)."""
    return re.sub(r"[^\w\-. /:]", "_", check.replace("[", ".").replace("]", ""))
