"""The prediction log as a Ray dataset, for drift checks, audits and relabelling."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import ray

from lensops.monitoring import records, store


def read_predictions(log: str, since: date | None = None, until: date | None = None) -> ray.data.Dataset:
    """The service's logged predictions from the days ``since``..``until`` (both included,
    either open), in :data:`lensops.monitoring.records.SCHEMA`, one row per request id: a
    request logged twice (see :mod:`lensops.monitoring.store`) keeps its earliest record."""
    fs, found = store.files(log, store.PREDICTIONS, since, until)
    if not found:
        return ray.data.from_arrow(records.SCHEMA.empty_table())
    logged = ray.data.read_parquet(found, filesystem=fs, partitioning=None, schema=records.SCHEMA)
    repeated = store.first_of_repeated(fs, found)
    if not repeated:
        return logged
    return logged.map_batches(_drop_later_copies, fn_kwargs={"repeated": repeated}, batch_format="pyarrow")


def _drop_later_copies(batch: Any, repeated: dict[str, datetime]) -> Any:
    keep = [
        repeated.get(request_id) in (None, at)
        for request_id, at in zip(batch["request_id"].to_pylist(), batch["scored_at"].to_pylist(), strict=True)
    ]
    return batch.filter(np.array(keep, dtype=bool))
