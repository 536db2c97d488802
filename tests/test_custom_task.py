"""A task defined only in the test suite (``toy_task.DustScore``: its own head, loss, decoding
and metric) goes through the library unchanged: Ray Train fit, test evaluation, registry,
promotion on its own metric, offline inference and the Serve application over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import synthetic_config
from ray import serve

from lensops.config import LensopsConfig
from lensops.model.preprocess import to_uint8
from lensops.runtime import free_port
from lensops.serving.app import run_local
from lensops.tracking import registry
from lensops.tracking.promotion import evaluate_and_promote
from lensops.training.fit import TrainOutcome, fit

pytestmark = pytest.mark.slow

NAME = "test-toy-task"
TASK = "toy_task:DustScore"


@pytest.fixture(scope="module")
def toy_cfg(synthetic_dir: Path, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> LensopsConfig:
    return synthetic_config(
        synthetic_dir,
        mlflow_uri,
        tmp_path_factory.mktemp("work-toy"),
        f"model.task={TASK}",
        "preprocess.image_size=32",
        "train.epochs=1",
        "train.warmup_epochs=0",
        "train.num_workers=1",
        "train.batch_size=16",
        "train.early_stopping_metric=val_brier",
        "train.early_stopping_mode=min",
        "tracking.experiment=test-toy-task",
        f"tracking.registered_model={NAME}",
    )


@pytest.fixture(scope="module")
def toy_run(ray_cluster: None, toy_cfg: LensopsConfig) -> TrainOutcome:
    return fit(toy_cfg)


@pytest.fixture(scope="module")
def toy_champion(toy_run: TrainOutcome, toy_cfg: LensopsConfig) -> str:
    decision = evaluate_and_promote(toy_cfg, toy_run.version)
    assert (decision.metric, decision.higher_is_better, decision.promoted) == ("brier", False, True)
    return decision.challenger.version


@pytest.fixture(scope="module")
def toy_url(toy_champion: str, toy_cfg: LensopsConfig) -> Iterator[str]:
    cfg = toy_cfg.model_copy(deep=True)
    cfg.serve.watch_interval_s = 0
    cfg.serve.max_replicas = 1
    yield run_local(cfg, port=free_port())
    serve.shutdown()


def _images(synthetic_dir: Path) -> list[bytes]:
    return [p.read_bytes() for label in ("clean", "dusty") for p in sorted((synthetic_dir / label).glob("*.png"))[:3]]


def test_the_task_trains_and_evaluates_on_its_own_metrics(toy_run: TrainOutcome, toy_cfg: LensopsConfig) -> None:
    assert set(toy_run.test_metrics) == {"test_brier", "test_accuracy"}
    outputs = toy_run.evaluation.outputs
    assert outputs.ndim == 1 and ((outputs >= 0) & (outputs <= 1)).all()
    expected = float(((outputs - toy_run.evaluation.targets) ** 2).mean())
    assert toy_run.test_metrics["test_brier"] == pytest.approx(expected)
    loaded = registry.load(toy_cfg.tracking.tracking_uri, NAME, toy_run.version)
    assert loaded.spec.model.task == TASK and type(loaded.spec.task).__name__ == "DustScore"


def test_the_service_and_offline_inference_answer_with_the_task_decoding(
    toy_url: str, toy_champion: str, toy_cfg: LensopsConfig, synthetic_dir: Path
) -> None:
    images = _images(synthetic_dir)
    served = [requests.post(f"{toy_url}/predict", files={"file": ("x.png", d)}, timeout=60).json() for d in images]
    offline = registry.load_predictor(toy_cfg.tracking.tracking_uri, NAME, toy_champion)
    batch = {"image": np.stack([to_uint8(d, offline.spec.preprocess) for d in images])}
    for answer, want in zip(served, offline.predict(batch), strict=True):
        assert set(answer) == {"prediction", "confidence", "dust_score", "model", "request_id"}
        assert answer["model"]["name"] == NAME and answer["model"]["version"] == toy_champion
        assert answer["prediction"] == want["prediction"]
        assert answer["dust_score"] == pytest.approx(want["dust_score"], abs=1e-4)
        assert answer["prediction"] == ("dusty" if answer["dust_score"] >= 0.5 else "clean")
    assert requests.get(f"{toy_url}/classes", timeout=30).json() == {"task": TASK, "classes": ["clean", "dusty"]}
