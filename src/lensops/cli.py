"""The lensops command: one verb per stage, from sample data to a served model.

Every verb that takes a configuration reads it the same way (a YAML file plus --set
overrides), and every verb that needs Ray joins --address, $RAY_ADDRESS or starts a local Ray.
The files in ray_jobs/ run the same verbs under `ray job submit`.
"""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import AbstractContextManager, nullcontext, redirect_stdout
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lensops import logs
from lensops.config import ConfigError, LensopsConfig, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, rich_markup_mode=None)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override one config key, e.g. --set train.epochs=3 (repeatable).")
]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Ray cluster to join; default: $RAY_ADDRESS, else a local Ray.")
]


def _set_verbose(value: bool) -> bool:
    if value:
        logs.set_verbose()
    return value


VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help=f"Show Ray's, Serve's and MLflow's own output and the tracebacks of errors (or {logs.LEVEL_ENV}=debug).",
        callback=_set_verbose,
    ),
]


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (progress and tables go to stderr).")
]


def _stdout_for_results(as_json: bool) -> AbstractContextManager:
    """With ``--json``, whatever the work prints (progress, tables, Ray Tune's status) goes to
    stderr, so that stdout carries the JSON result alone."""
    return redirect_stdout(sys.stderr) if as_json else nullcontext()


class SampleSource(StrEnum):
    elpv = "elpv"
    synthetic = "synthetic"
    change = "change"


def _config(config: Path | None, overrides: list[str] | None) -> LensopsConfig:
    """The command's configuration. Verbs read it before they import their stage (Ray, torch,
    MLflow: seconds), so that a wrong setting is reported at once."""
    return load_config(config, overrides or [])


def _connect(address: str | None) -> None:
    from lensops.runtime import init_ray

    init_ray(address)


@app.command("sample-data")
def sample_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the images and manifest.csv into.")],
    source: Annotated[
        SampleSource, typer.Option(help="Real ELPV cells, synthetic ones, or synthetic before/after scenes.")
    ] = SampleSource.elpv,
    count: Annotated[
        int | None, typer.Option(help="Synthetic: images per class (200); change: scenes of 16 tiles each (16).")
    ] = None,
    size: Annotated[int, typer.Option(help="Synthetic: image side in pixels; change: tile side.")] = 64,
    seed: Annotated[int, typer.Option(help="Synthetic: generator seed.")] = 0,
    limit: Annotated[int | None, typer.Option(help="ELPV: export only the first N cells.")] = None,
    bad_files: Annotated[bool, typer.Option("--bad-files", help="Plant files that validation must skip.")] = False,
    geotiff: Annotated[
        bool,
        typer.Option("--geotiff", help="Change: the scenes whole (4 tiles a side), as GeoTIFFs for `lensops chip`."),
    ] = False,
) -> None:
    """Write a sample image-folder dataset, with a manifest.csv, to OUT_DIR (with --geotiff:
    change scenes to cut with `lensops chip`)."""
    from lensops.data import samples

    if geotiff and (source is not SampleSource.change or bad_files):
        raise typer.BadParameter("--geotiff goes with --source change, without --bad-files")
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = source is SampleSource.change
    if geotiff:
        written = samples.write_change_rasters(out_dir, count or 16, size * samples.TILES_PER_SIDE, seed)
        typer.echo(f"wrote {written} change scenes as GeoTIFFs to {out_dir}")
        return
    if source is SampleSource.elpv:
        written = samples.write_elpv(out_dir, limit)
    elif pairs:
        written = samples.write_change(out_dir, count or 16, size, seed)
    else:
        written = samples.write_synthetic(out_dir, count or 200, size, seed)
    typer.echo(f"wrote {written} {source.value} {'tiles' if pairs else 'images'} to {out_dir}")
    if bad_files:
        planted = (samples.add_bad_pairs if pairs else samples.add_bad_files)(out_dir)
        typer.echo(f"planted {len(planted)} bad {'tiles' if pairs else 'files'}: {', '.join(planted)}")


@app.command()
def chip(
    before: Annotated[Path, typer.Argument(help="GeoTIFF of the first date.", exists=True, dir_okay=False)],
    after: Annotated[
        Path, typer.Argument(help="GeoTIFF of the second date, on the same grid.", exists=True, dir_okay=False)
    ],
    out_dir: Annotated[Path, typer.Argument(help="Folder of <scene>/<tile>/{before,after,mask}.tif.")],
    mask: Annotated[
        Path | None,
        typer.Option(help="Change mask GeoTIFF (one band, 0: unchanged), same grid.", exists=True, dir_okay=False),
    ] = None,
    size: Annotated[int, typer.Option(min=1, help="Tile side in pixels.")] = 256,
    stride: Annotated[
        int | None, typer.Option(min=1, help="Pixels from one tile to the next; default: --size (no overlap).")
    ] = None,
    min_valid: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Keep a tile when this share of its pixels has data at both dates.")
    ] = 0.9,
    bands: Annotated[
        str | None, typer.Option(help="Bands to keep, by description or 1-based index: B4,B3,B2,B8 or 3,2,1.")
    ] = None,
    scene: Annotated[
        str | None, typer.Option(help="Scene folder; default: BEFORE's file stem, or its folder for before.tif.")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Cut a before/after pair of GeoTIFFs (and its change mask) into georeferenced tiles,
    the <scene>/<tile>/ folders that change-detection training reads. The last tile of a row
    or column is moved back to end at the scene's edge."""
    from lensops.data import chipping

    summary = chipping.chip(before, after, mask, out_dir, size, stride, min_valid, bands, scene)
    typer.echo(summary.line())


@app.command()
def stitch(
    out: Annotated[Path, typer.Argument(help="GeoTIFF to write the scene's mask to.", dir_okay=False)],
    tiles: Annotated[
        list[Path], typer.Argument(help="Mask tiles (GeoTIFFs), or folders of */mask.tif tiles.", exists=True)
    ],
    verbose: VerboseOption = False,
) -> None:
    """Put georeferenced mask tiles (one CRS and resolution) back together into one GeoTIFF:
    changed wins where tiles overlap; 255 (nodata) where no tile lies."""
    from lensops.data import chipping

    files = chipping.mask_files(tiles)
    typer.echo(f"stitched {len(files)} tiles into {chipping.stitch(files, out)}")


@app.command()
def validate(
    source: Annotated[str, typer.Argument(help="Image folder, s3:// prefix or manifest.csv.")],
    report: Annotated[Path | None, typer.Option(help="Also write the JSON report here.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Catalog and validate a dataset: its version, class counts per split, skipped files."""
    cfg = _config(config, overrides)
    from lensops.console import print_validation
    from lensops.data.catalog import build_catalog
    from lensops.model.tasks import get_task

    cfg.data.source = source
    with _stdout_for_results(as_json):
        _connect(address)
        catalog = build_catalog(cfg.data, get_task(cfg.model.task))
        manifest = catalog.write(Path(cfg.data.work_dir) / "datasets") / "manifest.parquet"
    if report:
        catalog.report.write(report)
    if as_json:
        typer.echo(json.dumps({"report": catalog.report.model_dump(mode="json"), "manifest": str(manifest)}, indent=2))
        return
    print_validation(catalog.report)
    typer.echo(f"manifest: {manifest}")
    if report:
        typer.echo(f"report: {report}")


@app.command()
def train(
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Fine-tune on Ray Train, track the run in MLflow and register the model as challenger."""
    cfg = _config(config, overrides)
    from lensops.training.fit import fit

    _connect(address)
    outcome = fit(cfg)
    typer.echo(f"run_id: {outcome.run_id}")
    typer.echo(f"registered: {outcome.model_name} version {outcome.version} (alias challenger)")
    typer.echo(f"dataset_version: {outcome.dataset_version}")
    for name, value in outcome.test_metrics.items():
        typer.echo(f"{name}: {value:.4f}")


@app.command()
def promote(
    version: Annotated[str, typer.Option(help="Version number or alias to evaluate.")] = "challenger",
    decision: Annotated[Path | None, typer.Option(help="Also write the decision JSON here.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Score a registered version and the champion on the same test split; promote the better."""
    cfg = _config(config, overrides)
    from lensops.tracking.promotion import evaluate_and_promote

    _connect(address)
    outcome = evaluate_and_promote(cfg, version)
    text = outcome.model_dump_json(indent=2)
    typer.echo(text)
    if decision:
        decision.write_text(text)
    verdict = "promoted to champion" if outcome.promoted else "champion kept"
    typer.echo(f"version {outcome.challenger.version}: {verdict} ({outcome.reason})")


@app.command()
def tune(
    sweep: Annotated[Path, typer.Argument(help="Sweep definition (YAML, see tuning/).")],
    overrides: SetOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="Ignore an earlier run of this sweep.")] = False,
    address: AddressOption = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run a hyperparameter sweep on Ray Tune and register the best trial as challenger.

    Run the same command again after an interruption and the sweep resumes."""
    from lensops.tuning.space import load_sweep
    from lensops.tuning.sweep import run_sweep

    definition, base = load_sweep(sweep, overrides)
    with _stdout_for_results(as_json):
        _connect(address)
        outcome = run_sweep(definition, base, restart=restart)
    best = outcome.best
    if as_json:
        registered = {"name": best.model_name, "version": best.version, "alias": "challenger"}
        result = {
            "sweep_run_id": outcome.parent_run_id,
            "registered": registered,
            "test_metrics": best.test_metrics,
            "trials": [trial.model_dump(mode="json") for trial in outcome.trials],
        }
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"sweep_run_id: {outcome.parent_run_id}")
    typer.echo(f"best_trial: {outcome.trials[0].trial_id} run_id {best.run_id}")
    typer.echo(f"registered: {best.model_name} version {best.version} (alias challenger)")
    for name, value in best.test_metrics.items():
        typer.echo(f"{name}: {value:.4f}")


@app.command()
def pipeline(
    config: ConfigOption = None,
    sweep: Annotated[Path | None, typer.Option(help="Run this sweep instead of one training.")] = None,
    data: Annotated[str | None, typer.Option(help="Data location (sets data.source).")] = None,
    overrides: SetOption = None,
    service_url: Annotated[str | None, typer.Option(help="Service to tell about a new champion.")] = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Validate, train (or sweep), evaluate, promote and notify, as one tracked run.

    A failed step is named, exits 1 and leaves the champion untouched. With --service-url the
    service swaps at once (token from $LENSOPS_RELOAD_TOKEN); otherwise it follows the champion
    within its watch interval."""
    from lensops.pipeline import run_pipeline
    from lensops.tuning.space import load_sweep

    if (config is None) == (sweep is None):
        raise typer.BadParameter("give exactly one of --config and --sweep")
    sets = [*([f"data.source={data}"] if data else []), *(overrides or [])]
    definition, cfg = load_sweep(sweep, sets) if sweep else (None, _config(config, sets))
    _connect(address)
    outcome = run_pipeline(cfg, definition, service_url)
    decision = outcome.decision
    typer.echo(f"pipeline_run_id: {outcome.run_id}")
    for role, score in (("challenger", decision.challenger), ("previous champion", decision.champion)):
        if score:
            typer.echo(f"{role}: version {score.version} {decision.metric}={score.metrics[decision.metric]:.4f}")
    typer.echo(f"decision: {'promoted' if decision.promoted else 'kept'} ({decision.reason})")
    typer.echo(f"champion: version {outcome.champion}")


@app.command("batch-predict")
def batch_predict(
    source: Annotated[str, typer.Argument(help="Image folder (any depth), s3:// prefix, or manifest (.csv/.txt).")],
    output: Annotated[str, typer.Option(help="Folder or s3:// prefix of the parquet records.")],
    model: Annotated[str | None, typer.Option(help="Version number or alias (sets batch.model).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Also write the summary JSON here.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Score every image of SOURCE with a registered version into parquet, one row per file.

    Files the service would refuse get a row with the reason. Run it again into the same
    output and only files it does not hold yet (for that version) are scored."""
    cfg = _config(config, [*([f"batch.model={model}"] if model else []), *(overrides or [])])
    from lensops.scoring.batch import batch_predict as score

    _connect(address)
    outcome = score(cfg, source, output)
    for line in outcome.lines():
        typer.echo(line)
    if summary:
        summary.write_text(json.dumps(outcome.summary(), indent=2))


LogOption = Annotated[
    str | None, typer.Option("--log", help="Prediction log folder or s3:// prefix; default: serve.log_path.")
]


def _log(cfg: LensopsConfig, log: str | None) -> str:
    location = log or cfg.serve.log_path
    if location is None:
        raise ConfigError("no prediction log: pass --log or set serve.log_path")
    return location


@app.command("feedback-report")
def feedback_report(
    log: LogOption = None,
    mlflow: Annotated[bool, typer.Option("--mlflow", help="Also log the report as an MLflow run.")] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Join the prediction log with its feedback and judge each model version on it: the
    task's metrics and per-class table (classification) or errors (regression)."""
    cfg = _config(config, overrides)
    from lensops.monitoring import report

    location = _log(cfg, log)
    judgements = report.feedback_report(cfg, location)
    for line in report.lines(judgements):
        typer.echo(line)
    if mlflow:
        typer.echo(f"mlflow run: {report.track(cfg, location, judgements)}")


@app.command()
def monitor(
    images: Annotated[
        str | None, typer.Argument(help="New images (folder, s3:// prefix or manifest); default: the prediction log.")
    ] = None,
    log: LogOption = None,
    since: Annotated[str | None, typer.Option(help="Log window: first day (YYYY-MM-DD); default: the first.")] = None,
    until: Annotated[str | None, typer.Option(help="Log window: last day (YYYY-MM-DD), default: today.")] = None,
    model: Annotated[str | None, typer.Option(help="Version number or alias to check; default: serve.alias.")] = None,
    on_drift: Annotated[str | None, typer.Option(help="dry-run, notify or retrain (sets monitor.on_drift).")] = None,
    retrain_data: Annotated[
        str | None, typer.Option(help="Labelled data a retraining trains on (sets monitor.retrain_data).")
    ] = None,
    pushgateway: Annotated[
        str | None, typer.Option(envvar="LENSOPS_PUSHGATEWAY_URL", help="Push the gauges to this Pushgateway.")
    ] = None,
    alertmanager: Annotated[
        str | None, typer.Option(envvar="LENSOPS_ALERTMANAGER_URL", help="Alertmanager that notify alerts.")
    ] = None,
    jobs_address: Annotated[
        str, typer.Option(envvar="LENSOPS_JOBS_ADDRESS", help="Ray Jobs API (dashboard) that retrain submits to.")
    ] = "http://127.0.0.1:8265",
    out: Annotated[Path | None, typer.Option(help="Also write the decision as JSON here.")] = None,
    every: Annotated[str | None, typer.Option(help="Check again every 30s, 15m, 1h, ... until stopped.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Check new data for drift against the version's reference profile: one decision (drift,
    ok or insufficient_data) from Holm-corrected checks, logged to MLflow; on drift, do what
    --on-drift says."""
    import time

    sets = [*([f"monitor.on_drift={on_drift}"] if on_drift else [])]
    sets += [*([f"monitor.retrain_data={retrain_data}"] if retrain_data else []), *(overrides or [])]
    cfg = _config(config, sets)
    interval = _seconds(every) if every else None
    days = {"since": _day("--since", since), "until": _day("--until", until)}
    from lensops.monitoring.targets import Targets, require

    targets = Targets(pushgateway, alertmanager, jobs_address)
    require(cfg, targets)
    from lensops.monitoring.monitor import WindowSource, check
    from lensops.monitoring.trigger import respond

    source = WindowSource(images=images) if images else WindowSource(log=_log(cfg, log), **days)
    _connect(address)
    while True:
        checked = check(cfg, source, model or cfg.serve.alias)
        action = respond(cfg, checked, targets)
        typer.echo(f"{checked.version.name} v{checked.version.version} {checked.decision.line()}")
        typer.echo(f"action: {action}; mlflow run: {checked.run_id}")
        if out:
            out.write_text(json.dumps({**checked.summary(), "action": action}, indent=2))
        if interval is None:
            return
        time.sleep(interval)


def _day(option: str, value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        raise ConfigError(f"{option} {value}: give a day as YYYY-MM-DD") from None


def _seconds(interval: str) -> float:
    """``30s``, ``15m``, ``1h`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = interval[:-1], interval[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit() or float(number) <= 0:
        raise ConfigError(f"--every {interval}: give a positive number with s, m or h, e.g. 15m")
    return float(number) * units[unit]


@app.command("compact-log")
def compact_log(
    log: LogOption = None,
    retention_days: Annotated[int | None, typer.Option(help="Days kept; default: serve.log_retention_days.")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Remove the prediction log's days past the retention and merge each kept day's small parts."""
    cfg = _config(config, overrides)
    from lensops.monitoring.compaction import compact

    outcome = compact(_log(cfg, log), retention_days or cfg.serve.log_retention_days)
    for line in outcome.lines():
        typer.echo(line)


@app.command("alertmanager-config")
def alertmanager_config(
    out: Annotated[Path | None, typer.Option(help="Write the YAML here instead of printing it.")] = None,
) -> None:
    """Alertmanager's configuration from the LENSOPS_ALERT_* variables (webhook, e-mail)."""
    import yaml
    from pydantic import ValidationError

    from lensops.monitoring.alerting import PREFIX, AlertReceivers
    from lensops.monitoring.alerting import alertmanager_config as render

    try:
        receivers = AlertReceivers.from_env()
    except ValidationError as exc:
        raise ConfigError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    text = yaml.safe_dump(render(receivers), sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
    if not receivers.configured:
        typer.echo(f"no receiver: set {PREFIX}WEBHOOK_URL or {PREFIX}EMAIL_TO; alerts stay in Alertmanager", err=True)


@app.command()
def serve(
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    port: Annotated[int, typer.Option(help="HTTP port of the service.")] = 8000,
    verbose: VerboseOption = False,
) -> None:
    """Deploy the champion on Ray Serve and wait until it answers.

    Without --address it runs on this machine's Ray head (started if none runs), so the
    service keeps running after this command until `ray stop`."""
    cfg = _config(config, overrides)
    from lensops.runtime import ensure_head, init_ray
    from lensops.serving.app import run_local

    init_ray(address or ensure_head())
    url = run_local(cfg, port=port)
    typer.echo(f"serving {cfg.tracking.registered_model}@{cfg.serve.version or cfg.serve.alias} at {url}")


@app.command("serve-env")
def serve_env(
    host: Annotated[str, typer.Option(help="Address Serve listens on; 0.0.0.0 for every interface.")] = "127.0.0.1",
) -> None:
    """Print the exports for a Ray head you start yourself: Serve behind HAProxy, on HOST only.

    Run `eval "$(lensops serve-env)"` before `ray start --head`: the Serve fast path
    (HAProxy in front, direct ingress), its listeners on 127.0.0.1, and an HAProxy that ends
    with the cluster. Set the same host in the http_options of the Serve config you deploy."""
    from lensops.runtime import serve_env as environment

    for name, value in environment({}, host=host).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command()
def openapi() -> None:
    """Print the service's OpenAPI schema (docs/openapi.json is this output)."""
    from lensops.serving.api import api

    typer.echo(json.dumps(api.openapi(), indent=2))


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files to send.", exists=True, dir_okay=False)],
    url: Annotated[str, typer.Option(help="Base URL of the service.")] = "http://127.0.0.1:8000",
    verbose: VerboseOption = False,
) -> None:
    """Send images to a running service and print one answer per image."""
    from lensops.serving.client import describe, predict_files

    for path, answer in zip(images, predict_files(url, images), strict=True):
        typer.echo(f"{path}: {describe(answer)}")


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="Dataset folder; the ELPV sample is exported there if missing.")] = Path(
        "data/elpv"
    ),
    config: ConfigOption = None,
    overrides: SetOption = None,
    address: AddressOption = None,
    port: Annotated[int, typer.Option(help="HTTP port of the service.")] = 8000,
    verbose: VerboseOption = False,
) -> None:
    """The main job: sample data, validate, train, promote, serve, and predict over HTTP."""
    from lensops.demo import DEFAULT_CONFIG, run_demo

    cfg = _config(config or DEFAULT_CONFIG, [f"data.source={data.resolve()}", *(overrides or [])])
    run_demo(cfg, data, address, port)


USER_ERRORS = {
    "lensops.config": "ConfigError",
    "lensops.data.rasters": "RasterError",
    "lensops.data.validation": "DataValidationError",
    "lensops.pipeline": "StepFailed",
    "lensops.runtime": "ClusterError",
    "lensops.scoring.parts": "OutputError",
    "lensops.serving.client": "ServiceError",
}
"""Errors a user can cause and fix (module -> class): one line, no traceback (unless --verbose)."""


def _is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`USER_ERRORS` (or a missing file or registry entry). Only
    modules already imported are looked at: an error class that was never imported cannot have
    been raised, and importing the pipeline's or Ray's modules only to find that out would add
    seconds to every failing command."""
    loaded = tuple(getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules)
    return isinstance(exc, (*loaded, FileNotFoundError, LookupError))


def main(verb: str | None = None) -> None:
    """The ``lensops`` command; with ``verb``, that verb alone (the ``ray_jobs/`` files)."""
    command = typer.main.get_command(app)
    if verb is not None:
        command = command.commands[verb]  # type: ignore[attr-defined]
    try:
        command.main(args=sys.argv[1:], prog_name=Path(sys.argv[0]).name if verb else "lensops")
    except Exception as exc:
        if logs.verbose() or not _is_user_error(exc):
            raise
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)


if __name__ == "__main__":
    main()
