"""The ``lensops`` command: thin wrappers that parse options, call the library and print."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lensops.config import ConfigError, LensopsConfig, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value.")]
AddressOption = Annotated[str | None, typer.Option("--address", help="Ray cluster address; default: local Ray.")]


class SampleSource(StrEnum):
    elpv = "elpv"
    synthetic = "synthetic"


@app.command("sample-data")
def sample_data(
    out_dir: Path,
    source: Annotated[SampleSource, typer.Option(help="Real ELPV cells or synthetic.")] = SampleSource.elpv,
    count: Annotated[int, typer.Option(help="Synthetic: images per class.")] = 200,
    size: Annotated[int, typer.Option(help="Synthetic: image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Synthetic: generator seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="ELPV: export only the first N cells.")] = None,
    bad_files: Annotated[bool, typer.Option("--bad-files", help="Plant files validation must skip.")] = False,
) -> None:
    """Write a sample ImageFolder dataset (with manifest.csv) to OUT_DIR."""
    from lensops import sample_data as samples

    out_dir.mkdir(parents=True, exist_ok=True)
    if source is SampleSource.elpv:
        written = samples.write_elpv(out_dir, limit)
    else:
        written = samples.write_synthetic(out_dir, count, size, seed)
    typer.echo(f"wrote {written} {source.value} images to {out_dir}")
    if bad_files:
        planted = samples.add_bad_files(out_dir)
        typer.echo(f"planted {len(planted)} bad files: {', '.join(planted)}")


@app.command()
def validate(
    source: Annotated[str, typer.Argument(help="Image folder, s3:// URI or manifest.csv.")],
    report: Annotated[Path | None, typer.Option(help="Also write the JSON report here.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
) -> None:
    """Catalog and validate a dataset: version, class counts per split, skipped files."""
    from lensops.catalog import build_catalog
    from lensops.console import print_validation
    from lensops.runtime import init_ray
    from lensops.validation import DataValidationError

    cfg = _load(config, overrides or [])
    cfg.data.source = source
    init_ray(address)
    try:
        catalog = build_catalog(cfg.data)
    except (DataValidationError, FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    written = catalog.write(Path(cfg.data.work_dir) / "datasets")
    print_validation(catalog.report)
    typer.echo(f"manifest: {written / 'manifest.parquet'}")
    if report:
        catalog.report.write(report)
        typer.echo(f"report: {report}")


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to send.", exists=True, dir_okay=False)],
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
) -> None:
    """Send images to a running service and print one answer per image."""
    from lensops.client import describe, predict_files

    try:
        answers = predict_files(url, images)
    except (OSError, RuntimeError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    for path, answer in zip(images, answers, strict=True):
        typer.echo(f"{path}: {describe(answer)}")


def _load(config: Path | None, overrides: list[str]) -> LensopsConfig:
    try:
        return load_config(config, overrides)
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()
