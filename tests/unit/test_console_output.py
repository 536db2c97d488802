"""What a command prints off a terminal: tables at their natural width, no progress bars."""

from __future__ import annotations

import logging
import os

import pytest
import ray.data
from rich.table import Table

from lensops import logs
from lensops.console import show
from lensops.progress import tracked

LONG = "defective/" + "a_file_name_longer_than_any_terminal_line_" * 3 + ".png"


def test_off_a_terminal_a_table_never_wraps_a_cell(capsys: pytest.CaptureFixture[str]) -> None:
    table = Table(title="skipped files")
    for column in ("path", "reason", "detail"):
        table.add_column(column)
    table.add_row(LONG, "duplicate", f"same content as {LONG}")

    show(table)

    lines = capsys.readouterr().out.splitlines()
    assert any(LONG in line and f"same content as {LONG}" in line for line in lines), lines
    assert "\x1b[" not in "".join(lines)  # no colour codes in a log file


def test_off_a_terminal_tracked_batches_pass_through_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    batches = [[1, 2], [3], [4, 5, 6]]

    assert list(tracked(iter(batches), total=6, what="scoring")) == batches
    assert capsys.readouterr() == ("", "")


def test_quiet_libraries_keep_their_warnings_on_the_console_and_everything_in_their_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    for variable in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        monkeypatch.delenv(variable, raising=False)
    handlers = [h for name in logs.LOUD_LOGGERS for h in logging.getLogger(name).handlers]
    for handler in handlers:
        monkeypatch.setattr(handler, "level", handler.level)  # restored after the test
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "enable_progress_bars", context.enable_progress_bars)

    logs.quiet_libraries()

    consoles = [h for h in logging.getLogger("ray.data").handlers if type(h).__name__ == "PlainRayHandler"]
    files = [h for h in logging.getLogger("ray.data").handlers if type(h).__name__ == "SessionFileHandler"]
    assert consoles and all(h.level == logging.WARNING for h in consoles)
    assert files and all(h.level < logging.INFO for h in files)
    assert not context.enable_progress_bars
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"


def test_verbose_leaves_the_libraries_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.LEVEL_ENV, "debug")
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "enable_progress_bars", True)

    logs.quiet_libraries()

    assert context.enable_progress_bars
