"""The prediction log without a service: buffering and flushing, the store's layout and
lookups, compaction, and judging versions on feedback."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from lensops.model.tasks import get_task
from lensops.monitoring import feedback, records, store
from lensops.monitoring.compaction import compact
from lensops.monitoring.log_writer import LogSettings, PredictionLog
from lensops.serving.contract import FeedbackBody

CLASSES = ["clean", "dusty"]


class Counted:
    """The log's metrics, kept as plain numbers."""

    def __init__(self) -> None:
        self.written, self.failed, self.dropped, self.flushes = 0, 0, 0, 0

    def log_written(self, rows: int, seconds: float) -> None:
        self.written += rows
        self.flushes += 1

    def log_failed(self) -> None:
        self.failed += 1

    def log_dropped(self, rows: int) -> None:
        self.dropped += rows


def record(request_id: str, prediction: str = "dusty", version: str = "1", at: datetime | None = None) -> dict:
    dusty = 0.8 if prediction == "dusty" else 0.2
    answer = {
        "prediction": prediction,
        "confidence": max(dusty, 1 - dusty),
        "probabilities": {"clean": 1 - dusty, "dusty": dusty},
        "model": {"name": "m", "version": version, "alias": "champion", "run_id": "r", "dataset_version": "ds-1"},
    }
    facts = {"content_hash": "h", "input_format": "PNG", "input_width": 64, "input_height": 64}
    return {**records.service_record(request_id, answer, facts), "scored_at": at or records.now()}


def writer(tmp_path: Path, **settings: Any) -> tuple[PredictionLog, Counted]:
    chosen = {"location": str(tmp_path / "log"), "flush_s": 60, "flush_records": 1000, "max_buffered": 100}
    counted = Counted()
    return PredictionLog(LogSettings(**{**chosen, "images": False, **settings}), counted), counted


def write(log: str, rows: list[dict]) -> None:
    for folder, group in store.partitions(log, rows).items():
        store.write_predictions(folder, group)


def logged_ids(log: str) -> list[str]:
    return sorted(store.read(log, store.PREDICTIONS)["request_id"].to_pylist())


def test_records_reach_the_store_at_the_flush_interval_and_not_before(tmp_path: Path) -> None:
    log, counted = writer(tmp_path, flush_s=0.3)

    async def scenario() -> tuple[list[str], list[str]]:
        runner = asyncio.create_task(log.run())
        for n in range(5):
            log.add(record(f"r{n}"))
        before = logged_ids(log.settings.location)
        await asyncio.sleep(0.8)
        runner.cancel()
        return before, logged_ids(log.settings.location)

    before, after = asyncio.run(scenario())
    assert before == []
    assert after == [f"r{n}" for n in range(5)]
    assert counted.written == 5 and counted.failed == 0


def test_enough_waiting_records_flush_before_the_interval(tmp_path: Path) -> None:
    log, counted = writer(tmp_path, flush_s=60, flush_records=3)

    async def scenario() -> list[str]:
        runner = asyncio.create_task(log.run())
        for n in range(3):
            log.add(record(f"r{n}"))
        await asyncio.sleep(0.5)
        runner.cancel()
        return logged_ids(log.settings.location)

    assert asyncio.run(scenario()) == ["r0", "r1", "r2"]
    assert counted.flushes == 1


def test_an_unwritable_store_is_counted_and_loses_nothing_once_it_is_back(tmp_path: Path) -> None:
    log, counted = writer(tmp_path)
    blocked = Path(log.settings.location)
    blocked.write_text("a file where the log's folder should be")  # fails even for root
    log.add(record("a"))
    asyncio.run(log.flush())
    assert counted.failed == 1 and log.find("a") is not None
    log.add(record("b"))
    blocked.unlink()
    asyncio.run(log.flush())
    assert logged_ids(str(blocked)) == ["a", "b"]
    assert counted.written == 2 and log.pending == []


def test_a_flush_that_fails_part_way_writes_each_record_once_in_the_end(tmp_path: Path) -> None:
    log, counted = writer(tmp_path)
    day = records.now().date()
    blocked = Path(store.day_folder(log.settings.location, store.PREDICTIONS, day)) / "model_version=2"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    log.add(record("v1", version="1"))
    log.add(record("v2", version="2"))
    asyncio.run(log.flush())
    assert counted.failed == 1 and [r["request_id"] for r in log.pending] == ["v2"]
    blocked.unlink()
    asyncio.run(log.flush())
    assert logged_ids(log.settings.location) == ["v1", "v2"]


def test_past_the_buffer_bound_the_oldest_records_are_dropped_and_counted(tmp_path: Path) -> None:
    log, counted = writer(tmp_path, max_buffered=3)
    for n in range(5):
        log.add(record(f"r{n}"))
    assert [r["request_id"] for r in log.pending] == ["r2", "r3", "r4"]
    assert counted.dropped == 2


def test_a_request_id_is_logged_once_by_one_writer(tmp_path: Path) -> None:
    log, _ = writer(tmp_path)
    log.add(record("same"))
    log.add(record("same"))
    asyncio.run(log.flush())
    assert logged_ids(log.settings.location) == ["same"]


def test_logged_uploads_are_stored_beside_their_records(tmp_path: Path) -> None:
    log, _ = writer(tmp_path, images=True)
    log.add(record("with-image"), b"the upload's bytes")
    asyncio.run(log.flush())
    (path,) = store.read(log.settings.location, store.PREDICTIONS)["path"].to_pylist()
    assert Path(path).read_bytes() == b"the upload's bytes"
    assert f"/{store.IMAGES}/date=" in path


def test_records_are_partitioned_by_day_and_model_version(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    yesterday = records.now() - timedelta(days=1)
    write(log, [record("a", version="1", at=yesterday), record("b", version="2"), record("c")])
    folders = sorted(p.parent.relative_to(log).as_posix() for p in Path(log).rglob("*.parquet"))
    day, before = records.now().date().isoformat(), yesterday.date().isoformat()
    assert folders == sorted(
        [
            f"predictions/date={before}/model_version=1",
            f"predictions/date={day}/model_version=1",
            f"predictions/date={day}/model_version=2",
        ]
    )
    assert store.days(log, store.PREDICTIONS) == [yesterday.date(), records.now().date()]
    _, recent = store.files(log, store.PREDICTIONS, since=records.now().date())
    assert len(recent) == 2


def test_a_prediction_is_found_by_request_id_and_a_duplicate_reads_as_its_earliest_record(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    first = datetime(2026, 11, 30, 10, tzinfo=UTC)
    write(log, [record("dup", "clean", at=first), record("other")])
    write(log, [record("dup", "dusty", at=first + timedelta(seconds=5))])
    assert store.find_prediction(log, "dup")["prediction"] == "clean"
    assert store.find_prediction(log, "missing") is None
    assert store.unique(store.read(log, store.PREDICTIONS)).num_rows == 2


def test_compaction_removes_days_past_retention_and_merges_the_rest_without_duplicates(tmp_path: Path) -> None:
    log, today = str(tmp_path / "log"), date(2026, 12, 1)
    old = datetime(2026, 11, 1, tzinfo=UTC)
    recent = datetime(2026, 11, 30, tzinfo=UTC)
    write(log, [record("old", at=old)])
    for batch in (["a", "b"], ["b", "c"], ["d"]):
        write(log, [record(r, at=recent) for r in batch])
    store.write_feedback(log, feedback.row(record("a", at=recent), "clean") | {"received_at": recent})
    outcome = compact(log, retention_days=7, today=today)
    assert outcome.removed_days == ["predictions/date=2026-11-01"]
    assert outcome.merged_parts == 3 and outcome.written_parts == 1
    assert logged_ids(log) == ["a", "b", "c", "d"]
    assert not (Path(log) / "predictions" / "date=2026-11-01").exists()
    assert store.latest_feedback(log)["label"].to_pylist() == ["clean"]


def spec_for(task: str) -> SimpleNamespace:
    """What judging reads of a version's spec: its task and classes."""
    return SimpleNamespace(task=get_task(task), classes=CLASSES if task == "classification" else [])


def test_feedback_judges_each_version_with_its_task_and_the_latest_truth_counts(tmp_path: Path) -> None:
    log = str(tmp_path / "log")
    said = {"a": "dusty", "b": "dusty", "c": "clean", "d": "clean", "e": "dusty"}
    write(log, [record(r, p, version="1") for r, p in said.items()])
    write(log, [record("z", "dusty", version="2")])
    truths = {"a": "dusty", "b": "clean", "c": "clean", "d": "dusty"}  # e has none
    for request_id, truth in truths.items():
        store.write_feedback(log, feedback.row(store.find_prediction(log, request_id), truth))
    later = feedback.row(store.find_prediction(log, "d"), "clean")  # a correction
    store.write_feedback(log, later | {"received_at": later["received_at"] + timedelta(seconds=1)})
    store.write_feedback(log, feedback.row(store.find_prediction(log, "z"), "clean"))
    judged = {j.model_version: j for j in feedback.judge(log, lambda name, version: spec_for("classification"))}
    assert judged["1"].count == 4 and judged["1"].metrics["accuracy"] == pytest.approx(3 / 4)
    assert judged["2"].count == 1 and judged["2"].metrics["accuracy"] == 0.0
    assert "dusty" in judged["1"].report.text


def test_the_live_score_of_one_answer_is_its_share_of_the_task_metric() -> None:
    classification, regression = get_task("classification"), get_task("regression")
    logged = record("x", "dusty")
    assert classification.live_score(logged, classification.target_of("dusty", CLASSES), CLASSES) == 1.0
    assert classification.live_score(logged, classification.target_of("clean", CLASSES), CLASSES) == 0.0
    assert regression.live_score({"value": 2.5}, regression.target_of(4, []), []) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("task", "truth", "message"),
    [
        ("classification", "rusty", "not one of the model's classes: clean, dusty"),
        ("classification", 1.0, "not one of the model's classes"),
        ("regression", "dusty", "finite number"),
        ("regression", float("nan"), "finite number"),
    ],
)
def test_a_truth_the_model_cannot_have_predicted_is_refused_with_the_reason(
    task: str, truth: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        get_task(task).target_of(truth, CLASSES)


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "x"},
        {"request_id": "x", "label": "a", "value": 1},
        {"label": "a"},
        {"request_id": "", "label": "a"},
    ],
)
def test_feedback_needs_a_request_id_and_exactly_one_truth(body: dict) -> None:
    with pytest.raises(ValueError):
        FeedbackBody.validate_python(body)


def test_input_columns_describe_the_upload_and_the_model_input() -> None:
    from lensops.data.images import ImageCheck

    image = np.zeros((3, 4, 4), np.uint8)
    image[0] = 255
    columns = records.input_columns(b"bytes", ImageCheck(width=40, height=30, format="PNG"), image)
    assert columns["input_mean"] == pytest.approx([1.0, 0.0, 0.0])
    assert columns["input_std"] == pytest.approx([0.0, 0.0, 0.0])
    assert (columns["input_width"], columns["input_height"], columns["input_format"]) == (40, 30, "PNG")
    assert len(columns["content_hash"]) == 64


def test_an_empty_or_missing_log_reads_as_no_records(tmp_path: Path) -> None:
    assert store.read(str(tmp_path / "nothing"), store.PREDICTIONS).num_rows == 0
    assert feedback.judge(str(tmp_path / "nothing"), lambda *_: spec_for("classification")) == []


def test_a_retraining_adds_the_logged_uploads_that_got_a_label(tmp_path: Path) -> None:
    from lensops.config import LensopsConfig
    from lensops.data.sources import list_files
    from lensops.monitoring.trigger import training_data

    labelled = tmp_path / "labelled"
    for label in ("clean", "dusty"):
        (labelled / label).mkdir(parents=True)
        (labelled / label / f"{label}-1.png").write_bytes(b"png")
    log = str(tmp_path / "log")
    uploads = {f"up-{i}": str(tmp_path / f"up-{i}.png") for i in range(3)}
    write(log, [{**record(request_id), "path": path} for request_id, path in uploads.items()])
    write(log, [record("not-kept")])  # an upload the service did not keep has no path
    for request_id, truth in (("up-0", "clean"), ("up-1", "dusty"), ("not-kept", "dusty")):
        store.write_feedback(log, feedback.row(store.find_prediction(log, request_id), truth))
    cfg = LensopsConfig.model_validate(
        {
            "data": {"work_dir": str(tmp_path / "work")},
            "serve": {"log_path": log, "log_images": True},
            "monitor": {"retrain_data": str(labelled)},
        }
    )

    manifest = training_data(cfg)

    rows = sorted(zip(*list_files(manifest)[["path", "label"]].to_dict("list").values(), strict=True))
    assert manifest.endswith("manifest.csv") and rows == sorted(
        [
            (str(labelled / "clean" / "clean-1.png"), "clean"),
            (str(labelled / "dusty" / "dusty-1.png"), "dusty"),
            (uploads["up-0"], "clean"),
            (uploads["up-1"], "dusty"),
        ]
    )
    kept_off = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"log_images": False})})
    assert training_data(kept_off) == str(labelled)
