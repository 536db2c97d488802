"""Human-readable console output (rich tables) for reports produced by the library.

On a terminal a table fits its width; elsewhere (a log file, a pipe, CI) it is printed at its
natural width, so that no cell wraps and a file path can be copied whole."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from lensops.data import storage
from lensops.data.validation import ValidationReport

console = Console()


def print_validation(report: ValidationReport) -> None:
    console.print(
        f"[bold]dataset[/bold] {report.source}  [bold]version[/bold] {report.dataset_version}  "
        f"[bold]kept[/bold] {report.kept_files}/{report.total_files} files"
    )
    counts = Table(title="images per class and split")
    counts.add_column("class")
    splits = list(report.class_counts)
    for split in splits:
        counts.add_column(split, justify="right")
    counts.add_column("total", justify="right")
    for label in report.classes:
        row = [report.class_counts[s][label] for s in splits]
        counts.add_row(label, *map(str, row), str(sum(row)))
    show(counts)
    if not report.skipped:
        console.print("validation: no files skipped")
        return
    skipped = Table(title=f"skipped files ({len(report.skipped)})")
    for column in ("path", "label", "reason", "detail"):
        skipped.add_column(column, overflow="fold")
    root = _root(report.source)
    for item in report.skipped:
        path, detail = (text.replace(root, "") for text in (item.path, item.detail))
        skipped.add_row(path, item.label, item.reason.value, detail)
    show(skipped)


def show(table: Table) -> None:
    if console.is_terminal:
        console.print(table)
        return
    natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
    Console(file=console.file, width=max(natural, len(str(table.title or ""))), no_color=True).print(table)


def _root(source: str) -> str:
    """The folder catalog paths start with (resolved as the catalog resolves a local source)."""
    root = source if storage.is_s3(source) else str(Path(source).expanduser().resolve())
    folder = root.rsplit("/", 1)[0] if root.endswith(".csv") else root.rstrip("/")
    return folder + "/"
