"""The prediction log's store: parquet parts under one folder or ``s3://`` prefix, by day.

    <log>/predictions/date=2026-12-01/model_version=3/part-<id>.parquet   (records.SCHEMA)
    <log>/feedback/date=2026-12-04/part-<id>.parquet                      (records.FEEDBACK_SCHEMA)
    <log>/images/date=2026-12-01/<id>.<format>                            (serve.log_images)

Parts appear whole or not at all (:func:`lensops.scoring.parts.write_part`), so a reader never
sees half a flush. The folder names are for pruning by day and for people; the files carry every
column themselves, so readers ignore the names (no hive partitioning).

A prediction is unique by request id, and readers hold to it (:func:`unique`): a client that
retries with the same ``X-Request-ID`` after a lost answer may have been logged by two ingress
replicas, and compaction's merged part exists beside the parts it replaces for a moment.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from lensops.data import storage
from lensops.monitoring import records
from lensops.scoring import parts

PREDICTIONS, FEEDBACK, IMAGES = "predictions", "feedback", "images"
KINDS = {PREDICTIONS: records.SCHEMA, FEEDBACK: records.FEEDBACK_SCHEMA}
DAY_PREFIX = "date="


def day_folder(log: str, kind: str, day: date) -> str:
    return storage.join(log, kind, f"{DAY_PREFIX}{day.isoformat()}")


def partitions(log: str, rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Prediction records by the folder they belong in: one per (day, model version)."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        day = day_folder(log, PREDICTIONS, row["scored_at"].date())
        groups[storage.join(day, f"model_version={row['model_version']}")].append(row)
    return groups


def write_predictions(folder: str, rows: list[Mapping[str, Any]]) -> None:
    """Write the records of one partition (see :func:`partitions`) as one part."""
    _write(folder, records.table(rows))


def write_feedback(log: str, row: Mapping[str, Any]) -> None:
    _write(day_folder(log, FEEDBACK, row["received_at"].date()), records.table([row], records.FEEDBACK_SCHEMA))


def image_location(log: str, day: date, request_id: str, image_format: str) -> str:
    """Where a logged upload is kept; named by a digest of its request id (which is the client's)."""
    name = hashlib.sha256(request_id.encode()).hexdigest()[:32]
    return storage.join(day_folder(log, IMAGES, day), f"{name}.{image_format.lower() or 'bin'}")


def write_image(location: str, data: bytes) -> None:
    fs, path = storage.resolve(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)


def _write(folder: str, table: pa.Table) -> None:
    parts.prepare(folder)
    parts.write_part(table, folder)


def days(log: str, kind: str) -> list[date]:
    """The days ``kind`` has records of, oldest first."""
    fs, root = storage.resolve(storage.join(log, kind))
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except NotADirectoryError:
        return []
    found = [e.base_name.removeprefix(DAY_PREFIX) for e in entries if e.base_name.startswith(DAY_PREFIX)]
    return sorted(date.fromisoformat(day) for day in found)


def files(
    log: str, kind: str, since: date | None = None, until: date | None = None
) -> tuple[pafs.FileSystem, list[str]]:
    """The parts of ``kind`` from the days ``since``..``until`` (both included, either open)."""
    chosen = [d for d in days(log, kind) if (since is None or d >= since) and (until is None or d <= until)]
    fs, _ = storage.resolve(log)
    found = []
    for day in chosen:
        _, root = storage.resolve(day_folder(log, kind, day))
        found += parts_under(fs, root)
    return fs, found


def parts_under(fs: pafs.FileSystem, root: str) -> list[str]:
    """The parquet parts at any depth under ``root`` (hidden, unfinished ones left out)."""
    return [path for path, _ in storage.visible_files(fs, root) if path.endswith(".parquet")]


def read(
    log: str,
    kind: str,
    since: date | None = None,
    until: date | None = None,
    where: pads.Expression | None = None,
) -> pa.Table:
    """Every record of ``kind`` from the days ``since``..``until`` that ``where`` keeps, as
    stored (see :func:`unique`), read by this process with the filter pushed into the scan."""
    fs, found = files(log, kind, since, until)
    return _table(fs, found, kind, where)


def _table(fs: pafs.FileSystem, found: list[str], kind: str, where: pads.Expression | None = None) -> pa.Table:
    if not found:
        return KINDS[kind].empty_table()
    return pads.dataset(found, filesystem=fs, format="parquet", schema=KINDS[kind]).to_table(filter=where)


def find_prediction(log: str, request_id: str) -> dict[str, Any] | None:
    """The logged prediction of a request, newest day first; None when there is none."""
    fs, _ = storage.resolve(log)
    for day in reversed(days(log, PREDICTIONS)):
        _, found = files(log, PREDICTIONS, day, day)
        hits = _table(fs, found, PREDICTIONS, pads.field("request_id") == request_id)
        if hits.num_rows:
            return unique(hits).to_pylist()[0]
    return None


def unique(table: pa.Table, key: str = "request_id", order: str = "scored_at", latest: bool = False) -> pa.Table:
    """One row per ``key``: the earliest by ``order`` (the latest with ``latest``)."""
    if table.num_rows == 0:
        return table
    ordered = table.sort_by([(order, "descending" if latest else "ascending")])
    numbered = ordered.append_column("_row", pa.array(range(ordered.num_rows), pa.int64()))
    first = numbered.group_by(key, use_threads=False).aggregate([("_row", "min")])
    return ordered.take(sorted(first["_row_min"].to_pylist()))


def first_of_repeated(fs: pafs.FileSystem, found: list[str]) -> dict[str, Any]:
    """For each request id that the parts ``found`` hold more than once: the earliest time it was
    logged. Only two columns are read, so the whole log need not pass through one process."""
    ids = pads.dataset(found, filesystem=fs, format="parquet").to_table(columns=["request_id", "scored_at"])
    counted = ids.group_by("request_id", use_threads=False).aggregate([("scored_at", "count"), ("scored_at", "min")])
    repeated = counted.filter(pc.field("scored_at_count") > 1)
    return dict(zip(repeated["request_id"].to_pylist(), repeated["scored_at_min"].to_pylist(), strict=True))


def latest_feedback(log: str) -> pa.Table:
    """The truth per request id: the latest feedback sent for it."""
    return unique(read(log, FEEDBACK), order="received_at", latest=True)
