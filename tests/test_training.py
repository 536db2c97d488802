"""Ray Train fine-tuning on a real local Ray, tracked in a real MLflow store, registered.

One classification fit is shared: it survives an injected worker failure, so the same run
also shows that training resumes from its checkpoint instead of epoch 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import EPOCHS, synthetic_config

from lensops.config import LensopsConfig
from lensops.data import samples
from lensops.data.loading import split_datasets
from lensops.tracking import registry, runs
from lensops.tracking.promotion import evaluate_and_promote
from lensops.training.evaluation import evaluate
from lensops.training.fit import TrainOutcome, fit

pytestmark = pytest.mark.slow


def test_classifier_learns_the_synthetic_task(classification_run: TrainOutcome) -> None:
    assert classification_run.test_metrics["test_accuracy"] >= 0.85


def test_worker_failure_resumes_from_checkpoint_in_the_same_run(
    classification_run: TrainOutcome, mlflow_uri: str
) -> None:
    client = runs.client(mlflow_uri)
    experiment = client.get_experiment_by_name("test-classification")
    found = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in found] == [classification_run.run_id]
    history = client.get_metric_history(classification_run.run_id, "val_accuracy")
    # A restart from epoch 0 would log epochs 0..FAIL_AT-1 twice; resuming logs each once.
    assert sorted(m.step for m in history) == list(range(EPOCHS))


def test_run_holds_config_report_plots_and_model(classification_run: TrainOutcome, mlflow_uri: str) -> None:
    client = runs.client(mlflow_uri)
    run = client.get_run(classification_run.run_id)
    assert run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["dataset_version"] == classification_run.dataset_version
    assert run.data.tags["lensops.dataset_version"] == classification_run.dataset_version
    assert {"train_loss", "val_accuracy", "train_images_per_s", "lr", "test_accuracy"} <= set(run.data.metrics)
    artifacts = {
        a.path
        for folder in ("", "config", "data", "plots", "evaluation", "model")
        for a in client.list_artifacts(classification_run.run_id, folder)
    }
    assert {
        "config/resolved.yaml",
        "data/validation.json",
        "plots/confusion_matrix.png",
        "evaluation/per_class.json",
        "evaluation/test_report.txt",
        "model/spec.json",
        "model/model.safetensors",
        "model/MLmodel",
    } <= artifacts
    mistaken = classification_run.test_metrics["test_accuracy"] < 1
    assert ("evaluation/confident_mistakes.png" in artifacts) == mistaken  # drawn when there are mistakes


def test_run_and_version_show_the_training_data_and_its_licence(
    classification_run: TrainOutcome, mlflow_uri: str, training_dir: Path
) -> None:
    client = runs.client(mlflow_uri)
    (used,) = client.get_run(classification_run.run_id).inputs.dataset_inputs
    assert used.dataset.digest == classification_run.dataset_version
    assert json.loads(used.dataset.source) == {"uri": str(training_dir)}
    assert {tag.key: tag.value for tag in used.tags} == {"mlflow.data.context": "training"}
    profile = json.loads(used.dataset.profile)
    assert sum(sum(counts.values()) for counts in profile["images_per_split"].values()) == 400
    description = client.get_model_version(classification_run.model_name, classification_run.version).description
    assert f"**Data licence:** {samples.SYNTHETIC_LICENCE}." in description.splitlines()
    assert classification_run.dataset_version in description and "test_accuracy" in description


def test_registered_version_reproduces_its_test_metrics(
    classification_run: TrainOutcome, classification_cfg: LensopsConfig, mlflow_uri: str
) -> None:
    loaded = registry.load(mlflow_uri, "test-dust", classification_run.version)
    assert loaded.spec.classes == ["clean", "dusty"]
    assert loaded.spec.dataset_version == classification_run.dataset_version
    assert loaded.spec.baseline is not None and loaded.spec.baseline.pixels > 0
    from lensops.data.catalog import build_catalog

    catalog = build_catalog(classification_cfg.data)
    spec = loaded.spec
    test = split_datasets(catalog, spec.task, spec.preprocess, classification_cfg.data, splits=("test",))["test"]
    metrics = evaluate(loaded.model, loaded.spec, test).metrics
    assert metrics["accuracy"] == pytest.approx(classification_run.test_metrics["test_accuracy"])


def test_first_evaluation_promotes_the_challenger_to_champion(
    classification_run: TrainOutcome, classification_cfg: LensopsConfig, mlflow_uri: str
) -> None:
    trained = registry.find(mlflow_uri, classification_run.model_name, classification_run.version)
    fresh = registry.register(mlflow_uri, "test-first-champion", trained.run_id, trained.source, {})
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = "test-first-champion"
    decision = evaluate_and_promote(cfg)
    assert decision.promoted and decision.reason == "no champion yet"
    assert decision.champion is None and decision.challenger.version == fresh.version
    assert decision.challenger.metrics["accuracy"] == pytest.approx(classification_run.test_metrics["test_accuracy"])
    assert registry.find(mlflow_uri, "test-first-champion", registry.CHAMPION).version == fresh.version


def test_regression_head_lowers_mae(ray_cluster: None, training_dir: Path, mlflow_uri: str, tmp_path_factory) -> None:
    cfg = synthetic_config(
        training_dir,
        mlflow_uri,
        tmp_path_factory.mktemp("work-regression"),
        f"data.source={training_dir / 'manifest.csv'}",
        "data.target_column=dust_level",
        "model.task=regression",
        "train.epochs=4",
        "model.architecture=timm:tf_efficientnet_lite0",
        "model.weights=efficientnet-lite0",
        "train.lr=0.002",
        "train.num_workers=1",
        "train.batch_size=16",
        "train.early_stopping_metric=val_mae",
        "train.early_stopping_mode=min",
        "tracking.experiment=test-regression",
        "tracking.registered_model=test-dust-level",
    )
    outcome = fit(cfg)
    history = runs.client(mlflow_uri).get_metric_history(outcome.run_id, "val_mae")
    by_epoch = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert by_epoch[-1] < by_epoch[0]
    targets = outcome.evaluation.targets
    predict_the_mean = float(np.abs(targets - targets.mean()).mean())
    assert outcome.test_metrics["test_mae"] < predict_the_mean
