"""The training stage on the driver: data -> Ray Train fit -> test evaluation -> registry.

``fit`` builds the catalog and Ray datasets, opens the MLflow run, runs ``TorchTrainer``
(:mod:`lensops.training.loop` on every worker), evaluates the best checkpoint on the test
split, logs the task's report and plots, and registers the model version with alias
``challenger``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue
from torch import nn

from lensops import logs
from lensops.config import LensopsConfig, Runtime
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.loading import augmented, split_datasets, training_band_stats
from lensops.model import artifact, onnx_forward
from lensops.model.artifact import ChannelStats, ModelSpec
from lensops.model.backbones import pretrained_normalization
from lensops.model.forward import Forward, has_head
from lensops.model.preprocess import PreprocessSpec
from lensops.model.tasks import get_task
from lensops.monitoring import profile
from lensops.tracking import pyfunc, registry, runs
from lensops.tracking.epochs import EpochLogger
from lensops.tracking.model_card import model_card
from lensops.training.evaluation import Evaluation, evaluate
from lensops.training.mistakes import confident_mistakes, mistakes_figure
from lensops.training.worker import train_loop_per_worker


@dataclass
class TrainOutcome:
    run_id: str
    model_name: str
    version: str
    dataset_version: str
    test_metrics: dict[str, float]
    evaluation: Evaluation


@dataclass
class Prepared:
    """What every fit of one config needs: the data, its splits and the model spec."""

    uri: str
    catalog: Catalog
    spec: ModelSpec
    datasets: dict[str, ray.data.Dataset]


def fit(cfg: LensopsConfig, catalog: Catalog | None = None, parent_run_id: str | None = None) -> TrainOutcome:
    """Train, evaluate and register; ``catalog`` skips re-validating data checked just before."""
    prepared = prepare(cfg, catalog)
    prepared.catalog.write(Path(cfg.data.work_dir) / "datasets")
    run_id = open_run(cfg, prepared, parent_run_id)
    with runs.closing(prepared.uri, run_id), logs.relayed() as lines:
        result = run_trainer(cfg, prepared, run_id, lines=lines)
        best = result.get_best_checkpoint(cfg.train.early_stopping_metric, cfg.train.early_stopping_mode)
        return conclude(cfg, prepared, run_id, best or result.checkpoint)


def prepare(cfg: LensopsConfig, catalog: Catalog | None = None) -> Prepared:
    catalog = catalog or build_catalog(cfg.data, get_task(cfg.model.task))
    spec = _spec(cfg, catalog, runs.git_commit())
    datasets = split_datasets(catalog, spec.task, spec.preprocess, cfg.data)
    return Prepared(runs.resolve_uri(cfg.tracking), catalog, spec, datasets)


def open_run(cfg: LensopsConfig, prepared: Prepared, parent_run_id: str | None = None, name: str | None = None) -> str:
    run_id = runs.start_run(
        prepared.uri, cfg, prepared.catalog.report, prepared.spec.git_commit, name=name, parent_run_id=parent_run_id
    )
    print(f"[lensops] MLflow run {run_id} ({prepared.uri})", flush=True)
    return run_id


def run_trainer(
    cfg: LensopsConfig,
    prepared: Prepared,
    run_id: str,
    callbacks: Sequence[UserCallback] = (),
    name: str | None = None,
    lines: Queue | None = None,
) -> Result:
    """One data-parallel ``TorchTrainer`` fit; epochs are logged into ``run_id`` as they end,
    and their lines put on ``lines`` (:func:`lensops.logs.relayed`) when given.

    A fit with the ``name`` of an interrupted one resumes from its latest checkpoint."""
    logger = EpochLogger(prepared.uri, run_id, cfg.train.epochs, lines)
    train = augmented(prepared.datasets["train"], prepared.spec.task, cfg.preprocess.augment)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": prepared.spec.model_dump(mode="json")},
        scaling_config=_scaling(cfg),
        run_config=_run_config(cfg, name or f"lensops-{run_id}", [logger, *callbacks]),
        datasets={"train": train, "val": prepared.datasets["val"]},
    )
    return trainer.fit()


def conclude(cfg: LensopsConfig, prepared: Prepared, run_id: str, checkpoint: Checkpoint) -> TrainOutcome:
    """Evaluate a checkpoint on the test split, log the report, profile the data, log the model
    with its profile and register it."""
    with checkpoint.as_directory() as directory:
        model, _ = artifact.load(directory)
    evaluation = evaluate(model, prepared.spec, prepared.datasets["test"])
    test_metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    runs.log_metrics(prepared.uri, run_id, test_metrics)
    runs.log_report(prepared.uri, run_id, evaluation.report())
    _log_mistakes(prepared, run_id, model, evaluation)
    _log_examples(prepared, run_id, model)
    reference = _profile(cfg, prepared, model)
    final = prepared.spec.model_copy(update={"metrics": test_metrics, "baseline": reference.channels})
    source = _log_model(prepared, run_id, model, final, reference.profile, cfg.serve.runtime)
    tags = {"dataset_version": final.dataset_version, **{k: f"{v:.6f}" for k, v in test_metrics.items()}}
    card = model_card(final, prepared.catalog.report)
    version = registry.register(prepared.uri, cfg.tracking.registered_model, run_id, source, tags, card)
    return TrainOutcome(
        run_id=run_id,
        model_name=cfg.tracking.registered_model,
        version=version.version,
        dataset_version=final.dataset_version,
        test_metrics=test_metrics,
        evaluation=evaluation,
    )


def _log_mistakes(prepared: Prepared, run_id: str, model: nn.Module, evaluation: Evaluation) -> None:
    """A classifier's most confident test mistakes under Grad-CAM, as a figure in the run."""
    if evaluation.outputs.ndim != 2 or evaluation.outputs.shape[1] != len(prepared.spec.classes):
        return  # not one probability per class
    found = confident_mistakes(model, prepared.spec, prepared.datasets["test"])
    if found:
        figure = mistakes_figure(model, prepared.spec, found)
        runs.log_figure(prepared.uri, run_id, figure, "evaluation/confident_mistakes.png")


def _log_examples(prepared: Prepared, run_id: str, model: nn.Module) -> None:
    """The task's figure of test examples beside the model's outputs, for a task that draws one."""
    task = prepared.spec.task
    if not task.figure_examples:
        return
    batch = next(iter(prepared.datasets["test"].iter_batches(batch_size=task.figure_examples, batch_format="numpy")))
    figure = task.examples_figure(batch, Forward(model.eval(), prepared.spec).outputs(batch))
    if figure is not None:
        runs.log_figure(prepared.uri, run_id, figure, "evaluation/examples.png")


def _log_model(
    prepared: Prepared, run_id: str, model: nn.Module, spec: ModelSpec, reference: profile.Profile, runtime: Runtime
) -> str:
    """Log the version's folder (weights, spec, reference profile, its MLflow pyfunc files and,
    for ONNX Runtime, its graph) into the run; its artifact URI is the registry's source."""
    example = pyfunc.example_frame(spec, prepared.datasets["test"].take(1)[0][spec.task.inputs[0]])
    with tempfile.TemporaryDirectory() as tmp:
        directory = artifact.save(tmp, model, spec)
        reference.save(directory)
        if runtime == "onnxruntime":
            onnx_forward.write(directory, model, spec)
        pyfunc.write(directory, Forward(model, spec), spec, example)
        return runs.log_directory(prepared.uri, run_id, directory, "model")


@dataclass
class _Reference:
    profile: profile.Profile
    channels: ChannelStats


def _profile(cfg: LensopsConfig, prepared: Prepared, model: nn.Module) -> _Reference:
    """The version's reference profile: training-split inputs, validation-split predictions."""
    image = prepared.spec.task.inputs[0]
    batches = prepared.datasets["train"].iter_batches(batch_size=256, batch_format="numpy")
    inputs = profile.input_stats(batch[image] for batch in batches)
    validation = evaluate(model, prepared.spec, prepared.datasets["val"], embed=has_head(model))
    kept = cfg.monitor
    built = profile.build(inputs, validation, kept.profile_images, kept.profile_embeddings, kept.seed)
    return _Reference(built, inputs.channels)


def _spec(cfg: LensopsConfig, catalog: Catalog, commit: str) -> ModelSpec:
    mean, std = pretrained_normalization(cfg.model)
    bands = cfg.preprocess.bands
    stats = training_band_stats(catalog, get_task(cfg.model.task), bands) if bands else None
    return ModelSpec(
        model=cfg.model,
        classes=catalog.classes,
        target_column=cfg.data.target_column,
        preprocess=PreprocessSpec.resolve(cfg.preprocess, mean, std, stats),
        dataset_version=catalog.version,
        data_source=catalog.source,
        data_licence=catalog.report.licence,
        config=cfg.model_dump(mode="json"),
        git_commit=commit,
    )


def _scaling(cfg: LensopsConfig) -> ScalingConfig:
    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    return ScalingConfig(
        num_workers=cfg.train.num_workers,
        use_gpu=cfg.train.use_gpu,
        resources_per_worker=resources,
        placement_strategy=cfg.train.placement_strategy,
    )


def _run_config(cfg: LensopsConfig, name: str, callbacks: list[UserCallback]) -> RunConfig:
    storage = cfg.train.storage_path or str(Path(cfg.data.work_dir).resolve() / "ray_results")
    return RunConfig(
        name=name,
        storage_path=storage,
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        callbacks=callbacks,
        checkpoint_config=CheckpointConfig(
            num_to_keep=1,
            checkpoint_score_attribute=cfg.train.early_stopping_metric,
            checkpoint_score_order=cfg.train.early_stopping_mode,
        ),
    )
