"""What a lensops command prints: its own progress, not Ray's, Ray Data's, Serve's or MLflow's.

By default a driver joins Ray with ``log_to_driver=False``, so what workers and actors print
(Ray Train's report dicts, Ray Data's execution plans, Serve's settings) stays in the session's
log files (``/tmp/ray/session_latest/logs``); the console handlers of Ray's and MLflow's loggers
show warnings and errors only, their file handlers still keep everything; Ray Data draws no
progress bars (lensops draws its own on a terminal, :mod:`lensops.progress`). Lines a worker
must show reach the driver through :func:`relayed`. ``--verbose`` or ``LENSOPS_LOG_LEVEL=debug``
brings all of Ray's output back.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.util.queue import Queue

LEVEL_ENV = "LENSOPS_LOG_LEVEL"
"""``debug`` shows Ray's, Ray Data's, Serve's and MLflow's own output as well as lensops'."""
LOUD_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune", "mlflow")
"""Loggers whose console output a quiet command keeps to warnings and errors."""


def verbose() -> bool:
    return os.environ.get(LEVEL_ENV, "").lower() == "debug"


def set_verbose() -> None:
    """From here on (and in the processes this one starts), show Ray's own output too."""
    os.environ[LEVEL_ENV] = "debug"


def quiet_libraries() -> None:
    """Keep Ray's and MLflow's chatter off this process's console, unless :func:`verbose`."""
    if verbose():
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import ray.data  # importing it configures the "ray.data" logger, so quieten after that
    from ray.util.debug import log_once

    for name in LOUD_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False  # datasets copy it when made
    log_once("ray_data_progress_manager_disabled")  # spends Ray Data's one warning that they are off


@contextmanager
def relayed() -> Iterator[Queue]:
    """A queue that remote code (a Train callback) puts lines on; this process prints them as
    they come, whatever ``log_to_driver`` says."""
    import ray
    from ray.util.queue import Queue

    lines = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()
    printer = threading.Thread(target=_print_until, args=(lines, done), daemon=True)
    printer.start()
    try:
        yield lines
    finally:
        done.set()
        printer.join()
        for line in lines.get_nowait_batch(lines.qsize()):
            print(line, flush=True)
        ray.kill(lines.actor)


def _print_until(lines: Queue, done: threading.Event) -> None:
    while not done.is_set():
        try:
            print(lines.get(timeout=0.5), flush=True)
        except queue.Empty:
            continue
