"""Shared pieces of the benchmark scripts: flags, environment facts, statistics, tables, JSON.

Every script measures lensops and its baseline in the same run, the sides taking turns over
rounds (:func:`in_rounds`), and prints one rich table with ``lensops``, ``baseline`` and
``ratio`` columns, the ratio as the median of the rounds' ratios with its range; ``--json``
writes the same rows plus the environment (CPU model, cores, library versions) to a file.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lensops.config import Runtime

REPO = Path(__file__).resolve().parents[1]
console = Console(width=200)


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    parsed = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    parsed.add_argument("--smoke", action="store_true", help="a tiny run of a few seconds (for tests)")
    parsed.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parsed.add_argument("--threads", type=int, default=cores(), help="torch threads of in-process baselines")
    return parsed


def add_model_flags(parsed: argparse.ArgumentParser) -> None:
    """``--arch``, ``--weights`` and ``--image-size``: the model that every side of a run uses."""
    parsed.add_argument("--arch", default="timm:tf_efficientnet_lite0", help="lensops model.architecture")
    parsed.add_argument("--weights", default="efficientnet-lite0", help="lensops model.weights ('none': random)")
    parsed.add_argument("--image-size", type=int, default=128, help="model input size (px)")
    parsed.add_argument("--runtime", choices=get_args(Runtime), default="torch", help="lensops' serve/batch.runtime")


def cores() -> int:
    """CPU cores this process may use (the container's limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: str) -> dict[str, Any]:
    import ray
    import torch

    env = {
        "cpu_model": cpu_model(),
        "cores": cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "device": device,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")


@contextmanager
def workspace() -> Iterator[Path]:
    """A temporary folder for generated data, models and the MLflow store; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="lensops-bench-") as tmp:
        yield Path(tmp)


def start_ray(attempts: int = 3) -> None:
    """lensops.runtime.init_ray, retried: on a saturated machine Ray's fixed start-up deadlines
    can run out (the test suite retries for the same reason)."""
    import ray

    from lensops.runtime import init_ray

    for attempt in range(1, attempts + 1):
        try:
            init_ray()
            ray.data.DataContext.get_current().enable_progress_bars = False
            return
        except Exception:
            ray.shutdown()
            if attempt == attempts:
                raise


# ---- statistics ---------------------------------------------------------------------------


def alternating(sides: Sequence[str], rounds: int) -> Iterator[list[str]]:
    """The order of ``sides`` in each round, reversed every other round: host drift between
    minutes then lands on both sides alike instead of in their ratio."""
    for index in range(rounds):
        yield list(sides) if index % 2 == 0 else list(reversed(sides))


def in_rounds(sides: Mapping[str, Callable[[], Any]], rounds: int) -> list[dict[str, Any]]:
    """Calls every side once per round in :func:`alternating` order; one row per round:
    ``{"round": 1, "first": <side>, <side>: <what it returned>, ...}``."""
    measured = []
    for index, order in enumerate(alternating(list(sides), rounds)):
        row: dict[str, Any] = {"round": index + 1, "first": order[0]}
        for name in order:
            row[name] = sides[name]()
        measured.append(row)
    return measured


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, lowest and highest of ``values`` (the ratios of the rounds)."""
    return {"median": statistics.median(values), "lowest": min(values), "highest": max(values)}


def round_comparison(
    measured: Sequence[dict[str, Any]], ours: str, theirs: str, metrics: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """One row per ``(label, key)`` of ``measured`` (:func:`in_rounds`): each side's median over
    the rounds, and the median and range of the rounds' ratios ``ours / theirs``."""
    rows = []
    for label, key in metrics:
        mine, other = [r[ours][key] for r in measured], [r[theirs][key] for r in measured]
        ratios = spread([ratio(a, b) for a, b in zip(mine, other, strict=True)])
        rows.append(
            {
                "metric": label,
                "lensops": statistics.median(mine),
                "baseline": statistics.median(other),
                "ratio": ratios["median"],
                "ratio_range": f"{ratios['lowest']:.2f}..{ratios['highest']:.2f}",
                "rounds": len(mine),
            }
        )
    return rows


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., ...}`` of ``values`` (NaN when empty)."""
    if not values:
        return {f"p{q:g}": math.nan for q in qs}
    found = np.percentile(np.asarray(values, dtype=float), qs)
    return {f"p{q:g}": float(v) for q, v in zip(qs, found, strict=True)}


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...; elapsed()`` gives seconds since the block began."""
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started


# ---- sample images ------------------------------------------------------------------------


def encoded_images(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` synthetic solar-cell images of ``size`` px, alternately PNG and JPEG bytes."""
    from lensops.data import synthetic

    items = synthetic.generate((count + 1) // 2, size, seed)[:count]
    out = []
    for index, (_, _, image, _) in enumerate(items):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if index % 2 == 0 else "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


# ---- output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One table column: ``key`` in each row, its header, a format spec and the side it measures."""

    key: str
    header: str
    fmt: str = ".1f"
    side: str = ""
    """``lensops``, ``baseline`` or ``ratio`` (for the header's colour); empty for labels."""


STYLES = {"lensops": "cyan", "baseline": "magenta", "ratio": "bold green"}


def print_table(title: str, columns: Sequence[Column], rows: Sequence[dict[str, Any]], note: str = "") -> None:
    table = Table(title=title, caption=note or None)
    for column in columns:
        table.add_column(column.header, justify="right" if column.fmt else "left", style=STYLES.get(column.side))
    for row in rows:
        table.add_row(*(_cell(row.get(c.key), c.fmt) for c in columns))
    console.print(table)


def comparison(
    ours: dict[str, Any], theirs: dict[str, Any], metrics: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """One row per ``(label, key)``: lensops' value, the baseline's and their ratio."""
    return [
        {"metric": label, "lensops": ours[key], "baseline": theirs[key], "ratio": ratio(ours[key], theirs[key])}
        for label, key in metrics
    ]


def comparison_columns(lensops: str, baseline: str, fmt: str = ".1f") -> list[Column]:
    return [
        Column("metric", "metric", ""),
        Column("lensops", lensops, fmt, "lensops"),
        Column("baseline", baseline, fmt, "baseline"),
        Column("ratio", "ratio lensops/baseline", ".2f", "ratio"),
    ]


def round_columns(lensops: str, baseline: str, fmt: str = ".1f") -> list[Column]:
    """The columns of :func:`round_comparison` rows."""
    return [
        Column("metric", "metric", ""),
        Column("lensops", f"{lensops}, median", fmt, "lensops"),
        Column("baseline", f"{baseline}, median", fmt, "baseline"),
        Column("ratio", "ratio lensops/baseline, median", ".2f", "ratio"),
        Column("ratio_range", "ratio range", "", "ratio"),
        Column("rounds", "rounds", "d"),
    ]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and fmt:
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format(value, fmt) if fmt and isinstance(value, int | float) else escape(str(value))


def write_json(path: Path | None, benchmark: str, device: str, settings: dict[str, Any], results: Any) -> None:
    if path is None:
        return
    payload = {"benchmark": benchmark, "environment": environment(device), "settings": settings, "results": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"results written to {path}")
