"""Prediction records: one versioned schema for what a model said about one image.

Batch scoring writes one record per input file, the service one per answered image (the
prediction log). Columns that only an online answer has (``request_id``, ``model_alias``) are
null in batch rows, and ``path``/``folder`` are null in online ones, so one reader serves
both. Feedback (the true answer for a logged prediction) has a schema of its own. A change of
columns bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from lensops.data.images import ImageCheck

SCHEMA_VERSION = 2

SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("source", pa.string()),  # "batch" or "service"
        ("request_id", pa.string()),
        ("path", pa.string()),
        ("folder", pa.string()),  # parent folder relative to the scored root ("" at the top)
        ("content_hash", pa.string()),  # sha256 of the file's bytes; "" when unreadable
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_alias", pa.string()),
        ("run_id", pa.string()),
        ("dataset_version", pa.string()),
        ("status", pa.string()),  # "ok" or "rejected"
        ("reason", pa.string()),  # the image rule that rejected it (lensops.data.images.Issue)
        ("detail", pa.string()),
        ("prediction", pa.string()),  # the label, or the value as text
        ("value", pa.float64()),  # regression tasks
        ("confidence", pa.float64()),
        ("probabilities", pa.map_(pa.string(), pa.float64())),
        ("input_format", pa.string()),
        ("input_width", pa.int32()),
        ("input_height", pa.int32()),
        ("input_mean", pa.list_(pa.float32())),  # per channel of the model input, 0..1
        ("input_std", pa.list_(pa.float32())),
        ("embedding", pa.list_(pa.float32())),  # penultimate-layer features, when asked for (v2)
    ]
)
"""Version 2 added ``embedding``; parts written at version 1 read back with it null."""
OK = "ok"
REJECTED = "rejected"

FEEDBACK_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("request_id", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),  # of the logged prediction the truth is about
        ("model_version", pa.string()),
        ("label", pa.string()),  # classification
        ("value", pa.float64()),  # regression
    ]
)
"""Ground truth sent for a logged prediction (``POST /feedback``); the latest per request id counts."""
FEEDBACK_SCHEMA_VERSION = 1


def answer_columns(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction columns of one task answer (``prediction``, ``confidence``, ...)."""
    prediction = answer["prediction"]
    numeric = isinstance(prediction, int | float)
    return {
        "prediction": str(prediction),
        "value": float(prediction) if numeric else None,
        "confidence": answer.get("confidence"),
        "probabilities": answer.get("probabilities"),
        "embedding": answer.get("embedding"),
    }


def input_columns(data: bytes, check: ImageCheck, image: np.ndarray) -> dict[str, Any]:
    """The input columns of one accepted upload (its bytes, their check, its uint8 model input)."""
    mean, std = (stat[0].tolist() for stat in input_facts(image[None]))
    return {
        "content_hash": hashlib.sha256(data).hexdigest(),
        "input_format": check.format,
        "input_width": check.width,
        "input_height": check.height,
        "input_mean": mean,
        "input_std": std,
    }


def service_record(
    request_id: str, answer: Mapping[str, Any], facts: Mapping[str, Any], embedding: list[float] | None = None
) -> dict[str, Any]:
    """The log record of one answered upload (``answer`` with its ``model`` block)."""
    model = answer["model"]
    return {
        "source": "service",
        "request_id": request_id,
        "scored_at": now(),
        "model_name": model["name"],
        "model_version": model["version"],
        "model_alias": model.get("alias"),
        "run_id": model["run_id"],
        "dataset_version": model["dataset_version"],
        "status": OK,
        "reason": "",
        "detail": "",
        **answer_columns(answer),
        "embedding": embedding,
        **facts,
    }


def input_facts(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (0..1 units) of each uint8 model input (N, C, H, W)."""
    scaled = images.astype(np.float32) / 255.0
    return scaled.mean(axis=(2, 3)), scaled.std(axis=(2, 3))


def table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema = SCHEMA) -> pa.Table:
    """Records in ``schema`` (:data:`SCHEMA` or :data:`FEEDBACK_SCHEMA`); absent columns are null."""
    version = FEEDBACK_SCHEMA_VERSION if schema is FEEDBACK_SCHEMA else SCHEMA_VERSION
    return pa.Table.from_pylist([{**row, "schema_version": version} for row in rows], schema=schema)


def now() -> datetime:
    return datetime.now(UTC)
