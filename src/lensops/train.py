"""The training stage on the driver: data -> Ray Train fit -> test evaluation -> registry.

``fit`` builds the catalog and Ray datasets, opens the MLflow run, runs ``TorchTrainer``
(:mod:`lensops.train_loop` on every worker), evaluates the best checkpoint on the test split,
logs the report and plots, and registers the model version with alias ``challenger``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from lensops import artifact, registry, tracking
from lensops.artifact import ModelSpec
from lensops.catalog import Catalog, build_catalog
from lensops.config import LensopsConfig
from lensops.datasets import augmented, channel_stats, split_datasets
from lensops.evaluate import Evaluation, confusion_figure, evaluate, report_text, residual_figure
from lensops.models import normalization
from lensops.preprocess import PreprocessSpec
from lensops.train_loop import train_loop_per_worker


@dataclass
class TrainOutcome:
    run_id: str
    model_name: str
    version: str
    dataset_version: str
    test_metrics: dict[str, float]
    evaluation: Evaluation


def fit(cfg: LensopsConfig, catalog: Catalog | None = None) -> TrainOutcome:
    """Train, evaluate and register; ``catalog`` skips re-validating data checked just before."""
    if cfg.model.task == "regression" and not cfg.data.target_column:
        raise ValueError("model.task=regression needs data.target_column (a numeric manifest column)")
    catalog = catalog or build_catalog(cfg.data)
    catalog.write(Path(cfg.data.work_dir) / "datasets")
    uri = tracking.resolve_uri(cfg.tracking)
    commit = tracking.git_commit()
    spec = _spec(cfg, catalog, commit)
    datasets = split_datasets(catalog, spec.preprocess, cfg.data)
    run_id = tracking.start_run(uri, cfg, catalog.report, commit)
    print(f"[lensops] MLflow run {run_id} ({uri})", flush=True)
    try:
        outcome = _fit_and_register(cfg, spec, datasets, run_id, uri)
    except BaseException:
        tracking.end_run(uri, run_id, succeeded=False)
        raise
    tracking.end_run(uri, run_id, succeeded=True)
    return outcome


def _spec(cfg: LensopsConfig, catalog: Catalog, commit: str) -> ModelSpec:
    mean, std = normalization(cfg.model)
    return ModelSpec(
        model=cfg.model,
        classes=catalog.classes,
        target_column=cfg.data.target_column,
        preprocess=PreprocessSpec.resolve(cfg.preprocess, mean, std),
        dataset_version=catalog.version,
        data_source=catalog.source,
        config=cfg.model_dump(mode="json"),
        git_commit=commit,
    )


def _fit_and_register(
    cfg: LensopsConfig, spec: ModelSpec, datasets: dict[str, ray.data.Dataset], run_id: str, uri: str
) -> TrainOutcome:
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.model_dump(mode="json")},
        scaling_config=_scaling(cfg),
        run_config=_run_config(cfg, run_id, uri),
        datasets={"train": augmented(datasets["train"], cfg.preprocess.augment), "val": datasets["val"]},
    )
    with _quiet_data_progress():  # per-epoch lines from rank 0 are the progress report here
        result = trainer.fit()
    best = result.get_best_checkpoint(cfg.train.early_stopping_metric, cfg.train.early_stopping_mode)
    with (best or result.checkpoint).as_directory() as directory:
        model, _ = artifact.load(directory)
    evaluation = evaluate(model, spec, datasets["test"])
    test_metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    _log_evaluation(uri, run_id, evaluation, test_metrics)
    final = spec.model_copy(update={"metrics": test_metrics, "baseline": channel_stats(datasets["train"])})
    with tempfile.TemporaryDirectory() as tmp:
        source = tracking.log_directory(uri, run_id, artifact.save(tmp, model, final), "model")
    tags = {"dataset_version": spec.dataset_version, **{k: f"{v:.6f}" for k, v in test_metrics.items()}}
    version = registry.register(uri, cfg.tracking.registered_model, run_id, source, tags)
    return TrainOutcome(
        run_id=run_id,
        model_name=cfg.tracking.registered_model,
        version=version.version,
        dataset_version=spec.dataset_version,
        test_metrics=test_metrics,
        evaluation=evaluation,
    )


@contextmanager
def _quiet_data_progress() -> Iterator[None]:
    context = ray.data.DataContext.get_current()
    shown = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = shown


def _scaling(cfg: LensopsConfig) -> ScalingConfig:
    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    return ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu, resources_per_worker=resources)


def _run_config(cfg: LensopsConfig, run_id: str, uri: str) -> RunConfig:
    storage = cfg.train.storage_path or str(Path(cfg.data.work_dir).resolve() / "ray_results")
    return RunConfig(
        name=f"lensops-{run_id}",
        storage_path=storage,
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        callbacks=[tracking.EpochLogger(uri, run_id, cfg.train.epochs)],
        checkpoint_config=CheckpointConfig(
            num_to_keep=1,
            checkpoint_score_attribute=cfg.train.early_stopping_metric,
            checkpoint_score_order=cfg.train.early_stopping_mode,
        ),
    )


def _log_evaluation(uri: str, run_id: str, evaluation: Evaluation, test_metrics: dict[str, float]) -> None:
    tracking.log_metrics(uri, run_id, test_metrics)
    tracking.log_text(uri, run_id, report_text(evaluation), "evaluation/test_report.txt")
    if evaluation.task == "regression":
        tracking.log_figure(uri, run_id, residual_figure(evaluation), "plots/residuals.png")
        return
    tracking.log_figure(uri, run_id, confusion_figure(evaluation), "plots/confusion_matrix.png")
    tracking.log_dict(uri, run_id, {"per_class": evaluation.per_class()}, "evaluation/per_class.json")
