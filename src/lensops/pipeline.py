"""The closed retraining loop on one data location, as one MLflow run with a step per stage:

validate -> train (or sweep) -> evaluate against the champion -> promote or keep -> notify.

Only the evaluate step can move the ``champion`` alias, and only after everything before it
succeeded, so a failed step leaves the served model untouched. The running service follows
the alias on its own (``serve.watch_interval_s``); ``notify`` makes it switch at once through
``POST /reload-model`` when a service URL and its token are given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

from lensops.config import LensopsConfig
from lensops.console import console, print_validation
from lensops.data.catalog import build_catalog
from lensops.model.tasks import get_task
from lensops.tracking import registry, runs
from lensops.tracking.promotion import Decision, evaluate_and_promote
from lensops.training.fit import TrainOutcome, fit
from lensops.tuning.space import SweepConfig
from lensops.tuning.sweep import run_sweep

T = TypeVar("T")
STEP_TAG = "lensops.step"


class StepFailed(RuntimeError):
    """A pipeline step raised; the message names the step and the champion left in place."""


@dataclass
class PipelineOutcome:
    run_id: str
    challenger: TrainOutcome
    decision: Decision
    champion: str | None
    """The version under ``champion`` when the pipeline ended."""


@dataclass
class _Steps:
    uri: str
    run_id: str
    names: list[str]

    def run(self, name: str, action: Callable[[], T]) -> T:
        """Run one step: a console header, a status tag, its duration as a metric."""
        console.rule(f"step {self.names.index(name) + 1}/{len(self.names)}: {name}")
        started = time.monotonic()
        try:
            result = action()
        except Exception as exc:
            runs.set_tags(self.uri, self.run_id, {f"{STEP_TAG}.{name}": "failed", "lensops.failed_step": name})
            raise StepFailed(f"step '{name}' failed: {type(exc).__name__}: {exc}") from exc
        runs.set_tags(self.uri, self.run_id, {f"{STEP_TAG}.{name}": "ok"})
        runs.log_metrics(self.uri, self.run_id, {f"step_{name}_s": time.monotonic() - started})
        return result


def run_pipeline(
    cfg: LensopsConfig,
    sweep: SweepConfig | None = None,
    service_url: str | None = None,
) -> PipelineOutcome:
    """Validate, train (or run ``sweep`` over ``cfg``), evaluate, promote, notify."""
    uri = runs.resolve_uri(cfg.tracking)
    name = cfg.tracking.registered_model
    names = ["validate", "tune" if sweep else "train", "evaluate", *(["notify"] if service_url else [])]
    run_id = runs.create_run(uri, cfg.tracking.experiment, "pipeline", {"lensops.pipeline": ",".join(names)})
    runs.log_params(uri, run_id, {**cfg.flat(), "pipeline.sweep": sweep.name if sweep else "none"})
    print(f"[lensops] MLflow pipeline run {run_id} ({uri})", flush=True)
    steps = _Steps(uri, run_id, names)
    try:
        with runs.closing(uri, run_id):
            catalog = steps.run("validate", lambda: build_catalog(cfg.data, get_task(cfg.model.task)))
            print_validation(catalog.report)
            runs.log_dict(uri, run_id, catalog.report.model_dump(mode="json"), "data/validation.json")
            runs.set_tags(uri, run_id, {"lensops.dataset_version": catalog.version})
            if sweep:
                # one Tune experiment per dataset version: new data sweeps afresh, a re-run resumes
                named = sweep.model_copy(update={"name": f"{sweep.name}-{catalog.version[:12]}"})
                challenger = steps.run("tune", lambda: run_sweep(named, cfg, catalog, parent_run_id=run_id).best)
            else:
                challenger = steps.run("train", lambda: fit(cfg, catalog, parent_run_id=run_id))
            decision = steps.run("evaluate", lambda: evaluate_and_promote(cfg, challenger.version, catalog))
            _log_decision(uri, run_id, decision)
            if service_url:
                steps.run("notify", lambda: notify(service_url, cfg))
    except StepFailed as failure:
        champion = registry.find(uri, name, registry.CHAMPION)
        kept = f"version {champion.version}" if champion else "none"
        raise StepFailed(f"{failure}; champion of '{name}' left untouched ({kept})") from failure.__cause__
    champion = registry.find(uri, name, registry.CHAMPION)
    return PipelineOutcome(run_id, challenger, decision, champion.version if champion else None)


def notify(service_url: str, cfg: LensopsConfig) -> dict[str, Any]:
    """Ask the service to swap to the alias's version now (else it follows within its interval)."""
    token = os.environ.get(cfg.serve.reload_token_env)
    if not token:
        raise RuntimeError(f"${cfg.serve.reload_token_env} holds no token for {service_url}/reload-model")
    answer = requests.post(
        f"{service_url.rstrip('/')}/reload-model", headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    answer.raise_for_status()
    body = answer.json()
    print(f"service {service_url}: version {body['old_version']} -> {body['new_version']}")
    return body


def _log_decision(uri: str, run_id: str, decision: Decision) -> None:
    verdict = "promoted to champion" if decision.promoted else "champion kept"
    print(f"version {decision.challenger.version}: {verdict} ({decision.reason})")
    scores = {f"challenger_{k}": v for k, v in decision.challenger.metrics.items()}
    if decision.champion:
        scores.update({f"champion_{k}": v for k, v in decision.champion.metrics.items()})
    runs.log_metrics(uri, run_id, {**scores, "promoted": float(decision.promoted)})
    runs.log_dict(uri, run_id, decision.model_dump(mode="json"), "evaluation/decision.json")
    runs.set_tags(
        uri,
        run_id,
        {
            "lensops.decision": verdict,
            "lensops.reason": decision.reason,
            "lensops.challenger": decision.challenger.version,
        },
    )
