"""The service's side of the prediction log: records buffered in memory, written in the background.

A request only appends its record to a list (:meth:`PredictionLog.add`); a background task
writes what has gathered every ``flush_s`` seconds, or as soon as ``flush_records`` are
waiting, in a thread, so a slow or failing store never slows or fails a prediction. A write
that fails is counted and its records are kept for the next flush, up to ``max_buffered``
records (past it the oldest are dropped, and counted). What a crash of the process can lose is
what waits in memory: at most one flush window (``flush_s``, plus the write under way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lensops.monitoring import store

logger = logging.getLogger("lensops.monitoring")
REMEMBERED_IDS = 10_000
"""Request ids one writer remembers, so that a client's retry on the same replica is logged once."""


class LogMetrics(Protocol):
    def log_written(self, rows: int, seconds: float) -> None: ...
    def log_failed(self) -> None: ...
    def log_dropped(self, rows: int) -> None: ...


@dataclass(frozen=True)
class LogSettings:
    location: str
    flush_s: float
    flush_records: int
    max_buffered: int
    images: bool


class PredictionLog:
    def __init__(self, settings: LogSettings, metrics: LogMetrics):
        self.settings, self.metrics = settings, metrics
        self.pending: list[dict[str, Any]] = []
        self.writing: list[dict[str, Any]] = []
        self.images: dict[str, bytes] = {}
        """Uploads waiting to be written, by location (``serve.log_images``)."""
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.wake = asyncio.Event()

    def add(self, record: dict[str, Any], upload: bytes | None = None) -> None:
        """Queue one record (and its upload, when images are logged); a request id logged lately is skipped."""
        request_id = record["request_id"]
        if request_id in self.seen:
            return
        self.seen[request_id] = None
        if len(self.seen) > REMEMBERED_IDS:
            self.seen.popitem(last=False)
        if self.settings.images and upload is not None:
            day = record["scored_at"].date()
            record["path"] = store.image_location(self.settings.location, day, request_id, record["input_format"])
            self.images[record["path"]] = upload
        self.pending.append(record)
        self._bound()
        if len(self.pending) >= self.settings.flush_records:
            self.wake.set()

    def find(self, request_id: str) -> Mapping[str, Any] | None:
        """A record not yet in the store (waiting, or being written)."""
        return next((r for r in (*self.writing, *self.pending) if r["request_id"] == request_id), None)

    async def run(self) -> None:
        """Flush every ``flush_s`` seconds, or sooner when enough records wait; until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.flush_s)
            self.wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what waits; on failure keep it for the next flush."""
        if not self.pending:
            return
        self.writing, self.pending = self.pending, []
        rows = len(self.writing)
        images = {path: self.images.pop(path) for path in [r.get("path") for r in self.writing] if path in self.images}
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write, self.writing, images)
        except Exception as exc:  # any store failure: counted, and tried again at the next flush
            where = self.settings.location
            logger.warning("prediction log: cannot write %d records to %s: %r", len(self.writing), where, exc)
            self.metrics.log_failed()
            self.pending[:0] = self.writing
            self.images.update(images)
            self._bound()
        else:
            self.metrics.log_written(rows, time.perf_counter() - started)
        finally:
            self.writing = []

    def _write(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        """Write one flush, a part per partition; a written partition leaves :attr:`writing`, so
        a failure part-way keeps (and later writes) only what is not in the store yet."""
        for location, data in images.items():  # before the records that point at them
            store.write_image(location, data)
        for folder, group in store.partitions(self.settings.location, rows).items():
            store.write_predictions(folder, group)
            written = {id(row) for row in group}
            self.writing = [row for row in self.writing if id(row) not in written]

    def _bound(self) -> None:
        """Keep at most ``max_buffered`` waiting records, dropping the oldest."""
        excess = len(self.pending) - self.settings.max_buffered
        if excess > 0:
            for record in self.pending[:excess]:
                self.images.pop(record.get("path") or "", None)
            del self.pending[:excess]
            self.metrics.log_dropped(excess)
