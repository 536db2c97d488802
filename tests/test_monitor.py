"""The drift monitor on a real local Ray and MLflow store: a registered version's profile,
unseen images like the training data judged ok, shifted ones judged drift (scored through
the batch path), the decision tracked in MLflow, and retraining held back by its cooldown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensops.config import LensopsConfig
from lensops.data import samples
from lensops.monitoring import shifts, trigger
from lensops.monitoring.monitor import WindowSource, check
from lensops.monitoring.targets import Targets
from lensops.tracking import registry, runs
from lensops.training.fit import TrainOutcome

pytestmark = pytest.mark.slow

NAME = "test-monitor"


@pytest.fixture(scope="module")
def cfg(classification_cfg: LensopsConfig) -> LensopsConfig:
    chosen = classification_cfg.model_copy(deep=True)
    chosen.tracking.registered_model = NAME
    chosen.tracking.experiment = "test-monitor"  # test_training counts the runs of the shared fit's experiment
    chosen.monitor.min_window = 80
    chosen.batch.concurrency = 1
    return chosen


@pytest.fixture(scope="module")
def version(classification_run: TrainOutcome, cfg: LensopsConfig) -> registry.RegisteredVersion:
    uri = cfg.tracking.tracking_uri
    trained = registry.find(uri, classification_run.model_name, classification_run.version)
    registered = registry.register(uri, NAME, trained.run_id, trained.source, {})
    registry.set_alias(uri, NAME, registry.CHAMPION, registered.version)
    return registered


@pytest.fixture(scope="module")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cells from another generator seed than the training data: new, but not drifted."""
    out = tmp_path_factory.mktemp("unseen")
    samples.write_synthetic(out, count_per_class=50, size=64, seed=11)
    return out


def test_a_registered_version_carries_a_small_profile_of_its_data(
    version: registry.RegisteredVersion, cfg: LensopsConfig, classification_run: TrainOutcome
) -> None:
    profile = registry.load_profile(cfg.tracking.tracking_uri, version)
    val = len(profile.labels)
    assert 0 < val < 400 and profile.confidence.shape == (val,) and profile.live_scores.shape == (val,)
    assert profile.embeddings.shape == (val, 512)  # resnet18's penultimate layer, every validation image
    assert profile.input_mean.shape[1] == 3 and 200 < len(profile.input_mean) <= cfg.monitor.profile_images
    accuracy = classification_run.test_metrics["test_accuracy"]
    assert abs(profile.live_scores.mean() - accuracy) < 0.15  # validation and test: alike, not equal


def test_unseen_images_like_the_training_data_are_ok(
    ray_cluster: None, version: registry.RegisteredVersion, cfg: LensopsConfig, unseen: Path
) -> None:
    checked = check(cfg, WindowSource(images=str(unseen)), "champion")

    assert checked.decision.status == "ok", checked.decision.line()
    assert checked.decision.window == 100
    names = {c.name for c in checked.decision.checks}
    assert {"embedding", "prediction_mix", "confidence", "input_mean[0]", "input_std[2]"} <= names
    run = runs.client(cfg.tracking.tracking_uri).get_run(checked.run_id)
    assert run.data.tags["lensops.drift"] == "ok" and run.data.metrics["window"] == 100
    artifacts = {a.path for a in runs.client(cfg.tracking.tracking_uri).list_artifacts(checked.run_id, "monitor/plots")}
    assert artifacts == {"monitor/plots/inputs.png", "monitor/plots/predictions.png", "monitor/plots/embedding.png"}


def test_darker_images_drift_and_a_retraining_waits_for_its_cooldown(
    ray_cluster: None, version: registry.RegisteredVersion, cfg: LensopsConfig, unseen: Path, tmp_path: Path
) -> None:
    files = sorted(unseen.rglob("*.png"))
    shifts.write_shifted(files, unseen, tmp_path / "dark", "brightness", -0.3)

    checked = check(cfg, WindowSource(images=str(tmp_path / "dark")), "champion")

    assert checked.decision.status == "drift"
    assert "input_mean[0]" in checked.decision.fired, checked.decision.line()
    summary = json.loads(json.dumps(checked.summary()))
    assert summary["model"] == {"name": NAME, "version": version.version} and summary["status"] == "drift"
    retraining = cfg.model_copy(deep=True)
    retraining.monitor.on_drift = "retrain"
    retraining.monitor.retrain_data = str(unseen)
    uri = cfg.tracking.tracking_uri
    runs.set_tags(uri, checked.run_id, {trigger.RETRAINED_TAG: NAME, trigger.SUBMISSION_TAG: "an-earlier-one"})
    action = trigger.respond(retraining, checked, Targets(jobs_address="http://127.0.0.1:9"))
    assert action.startswith("cooldown: a retraining was submitted 0.0 h ago"), action
