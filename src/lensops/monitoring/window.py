"""A window of new data as the drift checks see it: per-image arrays taken from prediction
records (the prediction log's, or a batch job's output over a folder of new images)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lensops.model.artifact import ModelSpec
from lensops.monitoring import records


@dataclass
class Window:
    input_mean: np.ndarray
    """(n, C) per-image channel means of the model input, 0..1."""
    input_std: np.ndarray
    labels: list[str]
    """The task's ``metric_label`` of each prediction."""
    confidence: np.ndarray | None
    values: np.ndarray | None
    embeddings: np.ndarray | None
    """(n, D), when every record of the window carries one."""
    live_scores: np.ndarray | None = None
    """The live metric of each image that got feedback (fewer than n)."""

    @property
    def size(self) -> int:
        return len(self.labels)

    @classmethod
    def from_records(cls, table: pa.Table, spec: ModelSpec, truths: Mapping[str, Any] | None = None) -> Window:
        """The scored (``status == ok``) records of ``table``; ``truths`` maps request ids to the
        feedback they got (a label or a value)."""
        scored = table.filter(pc.equal(table["status"], records.OK))
        task = spec.task
        rows = scored.select(["prediction", "value", "confidence", "request_id", "probabilities"]).to_pylist()
        live = None
        if truths and task.live_metric:
            judged = [row for row in rows if row["request_id"] in truths]
            live = np.array(
                [
                    task.live_score(row, task.target_of(truths[row["request_id"]], spec.classes), spec.classes)
                    for row in judged
                ]
            )
        numeric = [row["value"] for row in rows]
        return cls(
            input_mean=_matrix(scored["input_mean"]),
            input_std=_matrix(scored["input_std"]),
            labels=[task.metric_label({"prediction": row["prediction"]}) for row in rows],
            confidence=_vector(scored["confidence"]),
            values=np.array(numeric, dtype=np.float64) if rows and None not in numeric else None,
            embeddings=_matrix(scored["embedding"]) if scored["embedding"].null_count == 0 and len(rows) else None,
            live_scores=live,
        )

    def take(self, indices: np.ndarray) -> Window:
        """The images at ``indices`` (a resampled window); live scores are kept as they are."""
        picked = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "labels":
                picked[item.name] = [value[i] for i in indices]
            elif item.name == "live_scores" or value is None:
                picked[item.name] = value
            else:
                picked[item.name] = value[indices]
        return Window(**picked)


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    values = column.to_pylist()
    return np.array(values, dtype=np.float64) if values else np.zeros((0, 3))


def _vector(column: pa.ChunkedArray) -> np.ndarray | None:
    if column.null_count:
        return None
    return np.array(column.to_pylist(), dtype=np.float64)
