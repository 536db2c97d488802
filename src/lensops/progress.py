"""Progress bars over the batches of long work (validation, batch scoring), on a terminal only.

They draw on stderr, so that stdout stays the command's result (``--json``) and a log file or a
pipe gets no bar at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Batch = TypeVar("Batch")
_terminal = Console(stderr=True)


def tracked(batches: Iterable[Batch], total: int, what: str, size: Callable[[Batch], int] = len) -> Iterator[Batch]:
    """``batches`` as they come, advancing a bar by ``size(batch)`` of ``total`` items."""
    if not _terminal.is_terminal:
        yield from batches
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_terminal) as bar:
        task = bar.add_task(what, total=total)
        for batch in batches:
            yield batch
            bar.advance(task, size(batch))
