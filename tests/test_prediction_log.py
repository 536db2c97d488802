"""The loop after deployment on a real service: every answer in the prediction log, read back
through Ray Data; a store that fails costs no prediction; feedback judged live and offline."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from metrics_page import metric_total
from ray import serve

from lensops.config import LensopsConfig
from lensops.monitoring import read_predictions, records, report, store
from lensops.monitoring.monitor import WindowSource, check
from lensops.runtime import free_port
from lensops.serving.app import run_local
from lensops.tracking import registry, runs
from lensops.training.fit import TrainOutcome
from lensops.waiting import wait_until

pytestmark = pytest.mark.slow

NAME = "test-log"
FLUSH_S = 0.5
METRICS_WAIT_S = 60
"""Ray exports a replica's metrics every few seconds."""


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prediction-log") / "log"


@pytest.fixture(scope="module")
def cfg(classification_cfg: LensopsConfig, log_dir: Path) -> LensopsConfig:
    chosen = classification_cfg.model_copy(deep=True)
    chosen.tracking.registered_model = NAME
    chosen.tracking.experiment = "test-feedback"  # its feedback-report run, apart from the shared fit's
    chosen.serve.watch_interval_s = 0
    chosen.serve.max_replicas = 1
    chosen.serve.log_path = str(log_dir)
    chosen.serve.log_flush_s = FLUSH_S
    chosen.serve.log_embeddings = True
    chosen.monitor.min_window = 20
    return chosen


@pytest.fixture(scope="module")
def version(classification_run: TrainOutcome, cfg: LensopsConfig) -> str:
    uri = cfg.tracking.tracking_uri
    trained = registry.find(uri, classification_run.model_name, classification_run.version)
    registered = registry.register(uri, NAME, trained.run_id, trained.source, {}).version
    registry.set_alias(uri, NAME, registry.CHAMPION, registered)
    return registered


@pytest.fixture(scope="module")
def url(ray_cluster: None, cfg: LensopsConfig, version: str) -> Iterator[str]:
    yield run_local(cfg, port=free_port())
    serve.shutdown()


def _images(training_dir: Path, label: str, count: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((training_dir / label).glob("*.png"))[:count]]


def _predict(url: str, data: bytes, request_id: str) -> dict:
    response = requests.post(
        f"{url}/predict", files={"file": ("x.png", data)}, headers={"X-Request-ID": request_id}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def _logged(log_dir: Path, ids: set[str]) -> bool:
    return ids <= set(store.read(str(log_dir), store.PREDICTIONS)["request_id"].to_pylist())


def test_every_answer_is_logged_once_and_reads_back_through_ray_data(
    url: str, log_dir: Path, training_dir: Path, version: str
) -> None:
    images = _images(training_dir, "clean", 6) + _images(training_dir, "dusty", 6)
    answers = {f"read-{i}": (_predict(url, data, f"read-{i}"), data) for i, data in enumerate(images)}
    _predict(url, images[0], "read-0")  # a client's retry: same id, logged once
    files = [("files", ("a.png", images[0])), ("files", ("b.png", b"not an image")), ("files", ("c.png", images[-1]))]
    batch = requests.post(f"{url}/predict_batch", files=files, headers={"X-Request-ID": "batch-1"}, timeout=60)
    ids = {*answers, "batch-1/0", "batch-1/2"}
    wait_until(lambda: _logged(log_dir, ids), 30, "the answers in the prediction log")
    # the same request logged again later, as by a second ingress replica a client retried on
    copy = store.find_prediction(str(log_dir), "read-3")
    copy |= {"scored_at": copy["scored_at"] + timedelta(seconds=1), "prediction": "a later copy"}
    for folder, rows in store.partitions(str(log_dir), [copy]).items():
        store.write_predictions(folder, rows)

    rows = [
        row for row in read_predictions(str(log_dir)).take_all() if row["request_id"].startswith(("read-", "batch-"))
    ]
    by_id = {row["request_id"]: row for row in rows}
    assert len(rows) == len(by_id) == len(ids), sorted(by_id)
    for request_id, (answer, data) in answers.items():
        row = by_id[request_id]
        assert row["prediction"] == answer["prediction"]
        assert dict(row["probabilities"]) == pytest.approx(answer["probabilities"], abs=1e-9)
        assert row["confidence"] == pytest.approx(answer["confidence"])
        assert (row["model_name"], row["model_version"], row["model_alias"]) == (NAME, version, "champion")
        assert row["content_hash"] == hashlib.sha256(data).hexdigest()
        assert (row["input_format"], row["input_width"], row["input_height"]) == ("PNG", 64, 64)
        assert len(row["input_mean"]) == len(row["input_std"]) == 3 and len(row["embedding"]) == 512
        assert row["source"] == "service" and row["schema_version"] == records.SCHEMA_VERSION
    results = batch.json()["results"]
    assert by_id["batch-1/2"]["prediction"] == results[2]["prediction"]
    assert "batch-1/1" not in by_id  # a rejected image is answered, not logged
    assert "embedding" not in answers["read-0"][0]  # logged, not answered


def test_with_the_store_unwritable_predictions_answer_and_the_failure_metric_rises(
    url: str, log_dir: Path, training_dir: Path
) -> None:
    failures = metric_total("ray_lensops_prediction_log_failures_total")
    aside = log_dir.with_name("log-aside")
    log_dir.rename(aside)
    log_dir.write_text("a file where the log's folder should be: no write can succeed, even as root")
    try:
        ids = {f"outage-{i}" for i in range(5)}
        for request_id, data in zip(sorted(ids), _images(training_dir, "dusty", 5), strict=True):
            _predict(url, data, request_id)
        wait_until(
            lambda: metric_total("ray_lensops_prediction_log_failures_total") > failures,
            METRICS_WAIT_S,
            "a counted log failure",
        )
    finally:
        log_dir.unlink()
        aside.rename(log_dir)
    wait_until(lambda: _logged(log_dir, ids), 30, "the kept records written once the store is back")


def test_feedback_is_judged_alike_by_the_live_metric_and_the_report(
    url: str, log_dir: Path, training_dir: Path, version: str, cfg: LensopsConfig
) -> None:
    examples = [("clean", d) for d in _images(training_dir, "clean", 5)]
    examples += [("dusty", d) for d in _images(training_dir, "dusty", 5)]
    truths = {}
    for i, (label, data) in enumerate(examples):
        answer = _predict(url, data, f"fb-{i}")
        wrong = "dusty" if label == "clean" else "clean"
        truths[f"fb-{i}"] = (wrong if i in (0, 7) else label, answer["prediction"])  # two labellers disagree
    hand = sum(truth == said for truth, said in truths.values()) / len(truths)
    wait_until(lambda: _logged(log_dir, set(truths)), 30, "the predictions in the log")

    for request_id, (truth, said) in truths.items():
        sent = requests.post(f"{url}/feedback", json={"request_id": request_id, "label": truth}, timeout=30)
        assert sent.status_code == 200, sent.text
        assert sent.json() == {
            "request_id": request_id,
            "model": {"name": NAME, "version": version},
            "prediction": said,
            "metric": "accuracy",
            "score": float(truth == said),
        }
    unknown = requests.post(f"{url}/feedback", json={"request_id": "never-sent", "label": "clean"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_request"
    bad_label = requests.post(f"{url}/feedback", json={"request_id": "fb-1", "label": "rusty"}, timeout=30)
    assert bad_label.status_code == 422 and bad_label.json()["error"] == "unknown_label"
    assert "clean, dusty" in bad_label.json()["detail"]
    both = requests.post(f"{url}/feedback", json={"request_id": "fb-1", "label": "clean", "value": 1}, timeout=30)
    assert both.status_code == 400 and both.json()["error"] == "invalid_feedback"

    wait_until(
        lambda: metric_total("ray_lensops_feedback_total", model_version=version) == len(truths),
        METRICS_WAIT_S,
        "the feedback counted",
    )
    live = metric_total("ray_lensops_feedback_score_total", model_version=version, metric="accuracy")
    assert live / len(truths) == pytest.approx(hand)

    (judged,) = report.feedback_report(cfg, str(log_dir))
    assert (judged.model_version, judged.count) == (version, len(truths))
    assert judged.metrics["accuracy"] == pytest.approx(hand)
    assert f"{NAME} version {version}: {len(truths)} predictions with feedback" in "\n".join(report.lines([judged]))
    run_id = report.track(cfg, str(log_dir), [judged])
    logged = runs.client(cfg.tracking.tracking_uri).get_run(run_id).data.metrics
    assert logged[f"v{version}_accuracy"] == pytest.approx(hand)


def test_the_monitor_checks_the_logged_answers_and_their_feedback(
    url: str, log_dir: Path, cfg: LensopsConfig, version: str
) -> None:
    """After the tests above: the version's logged answers as one window, feedback included."""
    checked = check(cfg, WindowSource(log=str(log_dir)), "champion")

    records = store.unique(store.read(str(log_dir), store.PREDICTIONS)).num_rows
    assert checked.decision.window == records >= cfg.monitor.min_window
    assert checked.decision.status in ("ok", "drift") and checked.version.version == version
    names = {c.name for c in checked.decision.checks}
    assert {"embedding", "live_accuracy", "prediction_mix", "confidence"} <= names, names
