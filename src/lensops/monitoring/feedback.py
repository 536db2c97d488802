"""Ground truth for logged predictions, and how each model version did against it.

The service records feedback as it arrives (``POST /feedback``, :func:`row`), days after the
prediction if need be; :func:`judge` joins the log's predictions with the latest truth sent for
each and scores every model version with its own task's metrics and report, the ones its
training run logged on the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from lensops.model.artifact import ModelSpec
from lensops.model.tasks import Report
from lensops.monitoring import records, store


def row(prediction: Mapping[str, Any], truth: str | float) -> dict[str, Any]:
    """The feedback record stating ``truth`` (a label, or a regression value) for a logged prediction."""
    is_label = isinstance(truth, str)
    return {
        "request_id": prediction["request_id"],
        "received_at": records.now(),
        "model_name": prediction["model_name"],
        "model_version": prediction["model_version"],
        "label": truth if is_label else None,
        "value": None if is_label else float(truth),
    }


@dataclass
class VersionJudgement:
    """How one model version did on the predictions that got feedback."""

    model_name: str
    model_version: str
    count: int
    metrics: dict[str, float]
    report: Report


def truths(log: str) -> dict[str, str | float]:
    """The latest truth sent for each request id (a label, or a regression value)."""
    return {
        sent["request_id"]: sent["label"] if sent["label"] is not None else sent["value"]
        for sent in store.latest_feedback(log).to_pylist()
    }


def joined(log: str) -> list[dict[str, Any]]:
    """Each logged prediction that has feedback, with its latest ``truth`` (a label or a value)."""
    sent = truths(log)
    if not sent:
        return []
    judged = store.read(log, store.PREDICTIONS, where=pads.field("request_id").isin(list(sent)))
    return [{**logged, "truth": sent[logged["request_id"]]} for logged in store.unique(judged).to_pylist()]


def judge(log: str, spec_of: Callable[[str, str], ModelSpec]) -> list[VersionJudgement]:
    """Every model version's metrics and report on its predictions with feedback;
    ``spec_of(name, version)`` gives each version's spec (its task and classes)."""
    by_version: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for logged in joined(log):
        by_version.setdefault((logged["model_name"], logged["model_version"]), []).append(logged)
    judgements = []
    for (name, version), logged in sorted(by_version.items(), key=lambda item: int(item[0][1])):
        spec = spec_of(name, version)
        task, classes = spec.task, spec.classes
        targets = np.asarray([task.target_of(row["truth"], classes) for row in logged])
        outputs = task.outputs_of(logged, classes)
        metrics = task.metrics(targets, outputs, classes)
        judgements.append(VersionJudgement(name, version, len(logged), metrics, task.report(targets, outputs, classes)))
    return judgements
