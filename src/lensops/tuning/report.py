"""What a finished sweep says: one summary row per trial, a sorted table and a trials plot."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from pydantic import BaseModel
from rich.table import Table

TrialStatus = Literal["completed", "patience", "stopped", "error"]
"""``patience``: ended by the trainer's early stopping; ``stopped``: cut by the scheduler."""


class TrialSummary(BaseModel):
    trial_id: str
    run_id: str | None
    params: dict[str, Any]
    status: TrialStatus
    epochs: int
    best: float | None
    """The trial's best value of the sweep metric over its epochs."""
    best_epoch: int | None
    checkpoint_path: str | None
    """Checkpoint of the best epoch (the one Ray Train keeps)."""
    error: str | None = None


def ranked(trials: list[TrialSummary], mode: str) -> list[TrialSummary]:
    """Best first; trials that never reported go last."""
    sign = 1 if mode == "min" else -1
    return sorted(trials, key=lambda t: (t.best is None, sign * (t.best if t.best is not None else 0.0)))


def table(trials: list[TrialSummary], metric: str) -> Table:
    keys = list(trials[0].params) if trials else []
    out = Table(title=f"trials by {metric}, best first")
    for column in ("#", "trial", *keys, metric, "epoch", "epochs", "status"):
        out.add_column(column, justify="right" if column not in ("trial", "status") else "left")
    for rank, trial in enumerate(trials, 1):
        out.add_row(
            str(rank),
            trial.trial_id,
            *(_fmt(trial.params.get(k)) for k in keys),
            _fmt(trial.best),
            "-" if trial.best_epoch is None else str(trial.best_epoch + 1),
            str(trial.epochs),
            trial.status if not trial.error else f"error: {trial.error[:60]}",
        )
    return out


def parallel_coordinates(trials: list[TrialSummary], metric: str, log_keys: set[str]) -> Figure:
    """One line per trial across the swept parameters and the metric, coloured by the metric."""
    scored = [t for t in trials if t.best is not None]
    keys = list(scored[0].params) if scored else []
    axes_names = [*keys, metric]
    columns = [_axis([t.params[k] for t in scored], k in log_keys) for k in keys]
    columns.append(_axis([t.best for t in scored], log=False))
    figure = Figure(figsize=(1.8 * max(len(axes_names), 2) + 1, 4), constrained_layout=True)
    ax = figure.subplots()
    values = np.array([t.best for t in scored], dtype=float)
    colours = _colours(values)
    for row, colour in enumerate(colours):
        ax.plot(range(len(axes_names)), [col[0][row] for col in columns], color=colour, alpha=0.85, marker="o")
    for x, (_, labels) in enumerate(columns):
        ax.axvline(x, color="0.6", linewidth=0.8)
        for y, label in labels:
            ax.annotate(label, (x, y), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
    ax.set_xticks(range(len(axes_names)), axes_names, rotation=15)
    ax.set_yticks([])
    ax.set_title(f"{len(scored)} trials (colour: {metric})")
    return figure


def _axis(values: list[Any], log: bool) -> tuple[list[float], list[tuple[float, str]]]:
    """Values scaled to 0..1 on one axis, with tick labels at the ends (or per category)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        numbers = np.array([math.log10(v) if log else v for v in values], dtype=float)
        low, high = float(numbers.min()), float(numbers.max())
        span = (high - low) or 1.0
        scaled = ((numbers - low) / span).tolist()
        ends = {0.0: min(values), 1.0: max(values)} if high > low else {scaled[0]: values[0]}
        return scaled, [(y, _fmt(v)) for y, v in ends.items()]
    categories = sorted({str(v) for v in values})
    position = {c: i / max(len(categories) - 1, 1) for i, c in enumerate(categories)}
    return [position[str(v)] for v in values], [(position[c], c) for c in categories]


def _colours(values: np.ndarray) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    if values.size == 0:
        return []
    span = float(values.max() - values.min()) or 1.0
    return [colormaps["viridis"](float(v - values.min()) / span) for v in values]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
