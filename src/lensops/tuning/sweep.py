"""Hyperparameter sweeps: Ray Tune trials, each one data-parallel Ray Train fit.

The Train V2 way: a Tune *function* trainable (``_trial``) builds and fits one
``TorchTrainer`` per trial; ``TuneReportCallback`` forwards every epoch's report to Tune, so
the scheduler (ASHA) sees the metric and stops poor trials. Stopping a trial ends the Tune
actor that owns the Train controller, and with it the trial's workers.

MLflow: one parent run for the sweep (definition, trials table, best config, a
parallel-coordinates plot) and one child run per trial (its params and per-epoch metrics).
Only the best trial's best checkpoint is evaluated on the test split, and registered with
alias ``challenger``. An interrupted sweep resumes from Tune's experiment state: finished
trials keep their results and unfinished ones continue from their Train checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pandas as pd
import pyarrow.fs
import yaml
from ray import tune
from ray.train import Checkpoint
from ray.tune.integration.ray_train import TuneReportCallback

from lensops.config import LensopsConfig
from lensops.console import console, show
from lensops.data.catalog import Catalog, build_catalog
from lensops.model.tasks import get_task
from lensops.tracking import runs
from lensops.training import fit
from lensops.training.fit import TrainOutcome
from lensops.tuning.report import TrialStatus, TrialSummary, parallel_coordinates, ranked, table
from lensops.tuning.space import LogUniform, SweepConfig, trial_config

SWEEP_TAG = "lensops.sweep"
TRIAL_TAG = "lensops.trial_id"


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_path: str
    trials: list[TrialSummary]
    """Best first."""
    best: TrainOutcome
    """The best trial, evaluated on the test split and registered as ``challenger``."""


def run_sweep(
    sweep: SweepConfig,
    base: LensopsConfig,
    catalog: Catalog | None = None,
    parent_run_id: str | None = None,
    restart: bool = False,
) -> SweepOutcome:
    """Run (or resume) ``sweep`` over ``base``; ``parent_run_id`` nests it in a pipeline run."""
    catalog = catalog or build_catalog(base.data, get_task(base.model.task))
    catalog.write(Path(base.data.work_dir) / "datasets")
    uri = runs.resolve_uri(base.tracking)
    path = experiment_path(sweep, base)
    resuming = not restart and tune.Tuner.can_restore(path)
    sweep_run = _sweep_run(uri, sweep, base, catalog, path, parent_run_id, resuming)
    with runs.closing(uri, sweep_run):
        trainable = tune.with_parameters(
            _trial, base=base.model_dump(mode="json"), catalog=catalog, parent_run_id=sweep_run, name=sweep.name
        )
        if resuming:
            console.print(f"[lensops] resuming sweep from {path}")
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = _tuner(sweep, base, trainable, path)
        results = tuner.fit()
        trials = ranked([_summary(uri, sweep_run, base, result, sweep) for result in results], sweep.mode)
        _close_stopped_trials(uri, trials)
        show(table(trials, sweep.metric))
        best = _register_best(sweep, base, catalog, trials)
        _log_sweep(uri, sweep_run, sweep, base, trials, best)
    return SweepOutcome(parent_run_id=sweep_run, experiment_path=path, trials=trials, best=best)


def experiment_path(sweep: SweepConfig, base: LensopsConfig) -> str:
    storage = sweep.storage_path or str(Path(base.data.work_dir).resolve() / "tune")
    return f"{storage.rstrip('/')}/{sweep.name}"


def _tuner(sweep: SweepConfig, base: LensopsConfig, trainable: Any, path: str) -> tune.Tuner:
    storage, name = path.rsplit("/", 1)
    return tune.Tuner(
        trainable,
        param_space=sweep.param_space(),
        tune_config=tune.TuneConfig(
            num_samples=sweep.num_samples,
            max_concurrent_trials=sweep.max_concurrent_trials,
            search_alg=sweep.searcher(),
            scheduler=sweep.trial_scheduler(base.train.epochs),
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=1),
    )


def _trial(params: dict[str, Any], base: dict[str, Any], catalog: Catalog, parent_run_id: str, name: str) -> None:
    """One trial: a full Ray Train fit of the base config with this trial's values."""
    cfg = trial_config(LensopsConfig.model_validate(base), params)
    trial_id = tune.get_context().get_trial_id()
    prepared = fit.prepare(cfg, catalog)
    run_id = _trial_run(cfg, prepared, parent_run_id, trial_id, params)
    with runs.closing(prepared.uri, run_id):
        # The Train run is named after the trial, so a restored trial resumes its checkpoint.
        fit.run_trainer(cfg, prepared, run_id, callbacks=[TuneReportCallback()], name=f"{name}-{trial_id}")


def _trial_run(
    cfg: LensopsConfig, prepared: fit.Prepared, parent_run_id: str, trial_id: str, params: dict[str, Any]
) -> str:
    """The trial's child run: reopened when a resumed sweep restarts this trial."""
    for run in runs.children(prepared.uri, parent_run_id):
        if run.data.tags.get(TRIAL_TAG) == trial_id:
            runs.set_status(prepared.uri, run.info.run_id, "RUNNING")
            return run.info.run_id
    run_id = runs.start_run(
        prepared.uri,
        cfg,
        prepared.catalog.report,
        prepared.spec.git_commit,
        name=f"trial-{trial_id}",
        parent_run_id=parent_run_id,
        tags={TRIAL_TAG: trial_id, **{f"lensops.param.{k}": str(v) for k, v in params.items()}},
    )
    return run_id


def _sweep_run(
    uri: str,
    sweep: SweepConfig,
    base: LensopsConfig,
    catalog: Catalog,
    path: str,
    parent_run_id: str | None,
    resuming: bool,
) -> str:
    """The sweep's parent run; a resumed sweep continues the run it started before."""
    if resuming and (previous := runs.find_run(uri, base.tracking.experiment, {SWEEP_TAG: path})):
        runs.set_status(uri, previous, "RUNNING")
        return previous
    tags = {SWEEP_TAG: path, "lensops.dataset_version": catalog.version}
    if parent_run_id:
        tags[runs.PARENT_TAG] = parent_run_id
    run_id = runs.create_run(uri, base.tracking.experiment, f"sweep-{sweep.name}", tags)
    definition = sweep.model_dump(mode="json")
    params = {k: v for k, v in definition.items() if k not in ("space", "search", "scheduler", "resources")}
    for section in ("search", "scheduler", "resources"):
        params.update({f"{section}.{k}": v for k, v in definition[section].items()})
    params.update({f"space.{k}": json.dumps(v) for k, v in definition["space"].items()})
    runs.log_params(uri, run_id, params)
    runs.log_dict(uri, run_id, definition, "sweep/definition.yaml")
    runs.log_dict(uri, run_id, base.model_dump(mode="json"), "sweep/base_config.yaml")
    print(f"[lensops] MLflow sweep run {run_id} ({uri})", flush=True)
    return run_id


def _summary(uri: str, sweep_run: str, base: LensopsConfig, result: tune.Result, sweep: SweepConfig) -> TrialSummary:
    metric, frame, params = sweep.metric, result.metrics_dataframe, dict(result.config)
    trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
    children = runs.children(uri, sweep_run)
    run_id = next((r.info.run_id for r in children if r.data.tags.get(TRIAL_TAG) == trial_id), None)
    error = str(result.error) if result.error else None
    if frame is None or metric not in frame or frame[metric].isna().all():
        return TrialSummary(
            trial_id=trial_id,
            run_id=run_id,
            params=params,
            status="error",
            epochs=0,
            best=None,
            best_epoch=None,
            checkpoint_path=None,
            error=error or "no epoch reported",
        )
    rows = frame.dropna(subset=[metric]).sort_values(metric, ascending=sweep.mode == "min")
    best = rows.iloc[0]
    planned = trial_config(base, params).train.epochs
    return TrialSummary(
        trial_id=trial_id,
        run_id=run_id,
        params=params,
        status=_status(uri, run_id, error, len(frame), planned),
        epochs=len(frame),
        best=float(best[metric]),
        best_epoch=int(best["epoch"]),
        checkpoint_path=_kept_checkpoint(rows, experiment_path(sweep, base)),
        error=error,
    )


def _kept_checkpoint(rows: pd.DataFrame, storage: str) -> str | None:
    """The checkpoint of the best epoch that Ray Train kept (ties: whichever survived)."""
    if "checkpoint_path" not in rows:
        return None
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(storage)
    for path in rows["checkpoint_path"].dropna():
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.Directory:
            return str(path)
    return None


def _status(uri: str, run_id: str | None, error: str | None, epochs: int, planned: int) -> TrialStatus:
    if error:
        return "error"
    finished = run_id is not None and runs.client(uri).get_run(run_id).info.status == "FINISHED"
    if not finished:
        return "stopped"  # the scheduler ended the trial before its trainer returned
    return "completed" if epochs >= planned else "patience"


def _close_stopped_trials(uri: str, trials: list[TrialSummary]) -> None:
    """Runs of trials the scheduler cut short never saw their end: record why they stopped."""
    for trial in trials:
        if trial.status == "stopped" and trial.run_id:
            runs.set_tags(uri, trial.run_id, {"lensops.stopped_early": "scheduler"})
            runs.end_run(uri, trial.run_id, "KILLED")


def _register_best(
    sweep: SweepConfig, base: LensopsConfig, catalog: Catalog, trials: list[TrialSummary]
) -> TrainOutcome:
    best = trials[0]
    if best.best is None or best.run_id is None or best.checkpoint_path is None:
        raise RuntimeError(f"sweep '{sweep.name}': no trial reported '{sweep.metric}' with a checkpoint")
    cfg = trial_config(base, best.params)
    prepared = fit.prepare(cfg, catalog)
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(experiment_path(sweep, base))
    checkpoint = Checkpoint(best.checkpoint_path, filesystem=filesystem)
    console.print(f"[lensops] best trial {best.trial_id}: {sweep.metric}={best.best:.4g}; evaluating on the test split")
    return fit.conclude(cfg, prepared, best.run_id, checkpoint)


def _log_sweep(
    uri: str,
    run_id: str,
    sweep: SweepConfig,
    base: LensopsConfig,
    trials: list[TrialSummary],
    best: TrainOutcome,
) -> None:
    best_trial = trials[0]
    counts = {status: sum(t.status == status for t in trials) for status in get_args(TrialStatus)}
    metrics = {f"best_{sweep.metric}": best_trial.best, **{f"trials_{k}": v for k, v in counts.items()}}
    runs.log_metrics(uri, run_id, {**metrics, **best.test_metrics})
    runs.log_dict(uri, run_id, {"trials": [t.model_dump(mode="json") for t in trials]}, "sweep/trials.json")
    best_config = trial_config(base, best_trial.params).model_dump(mode="json")
    runs.log_text(uri, run_id, yaml.safe_dump(best_config, sort_keys=False), "sweep/best_config.yaml")
    log_keys = {k for k, p in sweep.space.items() if isinstance(p, LogUniform)}
    runs.log_figure(uri, run_id, parallel_coordinates(trials, sweep.metric, log_keys), "plots/trials.png")
    runs.set_tags(
        uri,
        run_id,
        {
            "lensops.best_trial": best_trial.trial_id,
            "lensops.best_run_id": best.run_id,
            "lensops.registered_version": best.version,
        },
    )
