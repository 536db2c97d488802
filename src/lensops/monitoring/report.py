"""``lensops feedback-report``: each model version judged on the feedback its predictions got."""

from __future__ import annotations

from functools import cache

from lensops.config import LensopsConfig
from lensops.model.artifact import ModelSpec
from lensops.monitoring.feedback import VersionJudgement, judge
from lensops.tracking import registry, runs


def feedback_report(cfg: LensopsConfig, log: str) -> list[VersionJudgement]:
    """Judge every version with predictions in ``log`` that got feedback (specs from the registry)."""
    uri = runs.resolve_uri(cfg.tracking)

    @cache
    def spec_of(name: str, version: str) -> ModelSpec:
        return registry.load_spec(uri, registry.require(uri, name, version))

    return judge(log, spec_of)


def lines(judgements: list[VersionJudgement]) -> list[str]:
    """The report as a person reads it: per version, the count, metrics and the task's table."""
    if not judgements:
        return ["no logged prediction has feedback yet"]
    out = []
    for j in judgements:
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in j.metrics.items())
        counted = f"{j.count} prediction{'' if j.count == 1 else 's'} with feedback"
        out += [f"{j.model_name} version {j.model_version}: {counted}; {metrics}"]
        out += [f"  {line}" for line in j.report.text.splitlines()]
    return out


def track(cfg: LensopsConfig, log: str, judgements: list[VersionJudgement]) -> str:
    """Log the report as an MLflow run ``feedback-report``: ``v<version>_<metric>`` metrics, and
    per version its text, figures and tables under ``feedback/v<version>/``."""
    uri = runs.resolve_uri(cfg.tracking)
    run_id = runs.create_run(uri, cfg.tracking.experiment, "feedback-report", {"lensops.stage": "feedback-report"})
    with runs.closing(uri, run_id):
        runs.log_params(uri, run_id, {"log": log})
        for j in judgements:
            metrics = {f"v{j.model_version}_{name}": value for name, value in j.metrics.items()}
            runs.log_metrics(uri, run_id, {**metrics, f"v{j.model_version}_count": j.count})
            runs.log_report(uri, run_id, j.report, under=f"feedback/v{j.model_version}", text="report.txt")
    return run_id
