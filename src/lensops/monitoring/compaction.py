"""Retention and compaction of the prediction log (``lensops compact-log``).

Days older than the retention are removed whole (records, feedback and stored uploads). In
the days kept, the many small parts the service's flushes leave in one folder are merged
into one part: predictions keep one record per request id, feedback keeps every correction
(the latest counts). The merged part is written before the small ones are removed, so a
reader in between sees duplicates (which it drops, see :func:`lensops.monitoring.store.unique`),
never a gap; parts written while compaction runs are left for the next one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

import pyarrow.dataset as pads

from lensops.data import storage
from lensops.monitoring import records, store
from lensops.scoring import parts


@dataclass
class Compaction:
    removed_days: list[str] = field(default_factory=list)
    """``<kind>/date=<day>`` folders removed for being past the retention."""
    merged_parts: int = 0
    written_parts: int = 0

    def lines(self) -> list[str]:
        removed = ", ".join(self.removed_days) or "none"
        return [f"removed (past retention): {removed}", f"merged {self.merged_parts} parts into {self.written_parts}"]


def compact(log: str, retention_days: int, today: date | None = None) -> Compaction:
    """Remove the days of ``log`` older than ``retention_days`` before ``today``; merge the rest."""
    today = today or records.now().date()
    outcome = Compaction()
    for kind in (store.PREDICTIONS, store.FEEDBACK, store.IMAGES):
        for day in store.days(log, kind):
            folder = store.day_folder(log, kind, day)
            if (today - day).days >= retention_days:
                fs, path = storage.resolve(folder)
                fs.delete_dir(path)
                outcome.removed_days.append(f"{kind}/{store.DAY_PREFIX}{day.isoformat()}")
            elif kind in store.KINDS:
                _merge_day(folder, kind, outcome)
    return outcome


def _merge_day(folder: str, kind: str, outcome: Compaction) -> None:
    fs, root = storage.resolve(folder)
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in store.parts_under(fs, root):
        by_folder[path.rsplit("/", 1)[0]].append(path)
    for leaf, found in by_folder.items():
        if len(found) < 2:
            continue
        table = pads.dataset(found, filesystem=fs, format="parquet", schema=store.KINDS[kind]).to_table()
        if kind == store.PREDICTIONS:
            table = store.unique(table)
        parts.write_part(table, storage.to_uri(fs, leaf))
        for path in found:
            fs.delete_file(path)
        outcome.merged_parts += len(found)
        outcome.written_parts += 1
