"""Each epoch of a fit, logged to MLflow and shown on the driver's console as it ends.

The callback travels to every Ray Train worker with the run's configuration and never runs
there: MLflow loads with its first report, on the controller, and not on the workers.
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback
from ray.util.queue import Queue


class EpochLogger(UserCallback):
    """Ray Train callback, run on the Train controller: logs each epoch's metrics once the
    controller has registered that report (and its checkpoint). Epochs lost to a worker
    failure are never logged, so after a restart the run's metric history stays continuous."""

    def __init__(self, uri: str, run_id: str, epochs: int, lines: Queue | None = None):
        self.uri, self.run_id, self.epochs, self.lines = uri, run_id, epochs, lines

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        from lensops.tracking.runs import log_epoch

        reported = metrics[0]  # all ranks report the same all-reduced metrics
        log_epoch(self.uri, self.run_id, reported, int(reported["epoch"]))
        shown = " ".join(f"{k}={v:.4g}" for k, v in reported.items() if k not in ("epoch", "lr"))
        line = f"epoch {reported['epoch'] + 1}/{self.epochs} lr={reported['lr']:.3g} {shown}"
        if self.lines is None:
            print(f"[lensops] {line}", flush=True)  # in Ray's logs of the controller
        else:
            self.lines.put(line)  # the driver prints it (lensops.logs.relayed)
