"""The plots of a drift decision: reference against window, per check, as PNG files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lensops.monitoring.drift import Check, Decision, distinct_channels
from lensops.monitoring.profile import Profile
from lensops.monitoring.window import Window


def save(profile: Profile, window: Window, decision: Decision, directory: Path) -> Path:
    """Write ``inputs.png``, ``predictions.png`` and (with embeddings) ``embedding.png``."""
    by_name = {check.name: check for check in decision.checks}
    _inputs(profile, window, by_name, directory / "inputs.png")
    _predictions(profile, window, by_name, directory / "predictions.png")
    if "embedding" in by_name:
        _embedding(by_name["embedding"], directory / "embedding.png")
    return directory


def _inputs(profile: Profile, window: Window, checks: dict[str, Check], path: Path) -> None:
    channels = distinct_channels(profile.input_mean)
    figure = Figure(figsize=(4 * len(channels), 6))
    axes = figure.subplots(2, len(channels), squeeze=False)
    for column, channel in enumerate(channels):
        for row, (stat, reference, current) in enumerate(
            (("input_mean", profile.input_mean, window.input_mean), ("input_std", profile.input_std, window.input_std))
        ):
            name = f"{stat}[{channel}]"
            _histograms(axes[row][column], reference[:, channel], current[:, channel], _title(name, checks.get(name)))
    _write(figure, path)


def _predictions(profile: Profile, window: Window, checks: dict[str, Check], path: Path) -> None:
    figure = Figure(figsize=(10, 4))
    mix, spread = figure.subplots(1, 2)
    labels = sorted(set(profile.labels) | set(window.labels))
    x = np.arange(len(labels))
    for offset, (name, seen) in zip(
        (-0.2, 0.2), (("reference", profile.labels), ("window", window.labels)), strict=True
    ):
        counts = Counter(seen)
        mix.bar(x + offset, [counts[label] / max(len(seen), 1) for label in labels], width=0.4, label=name)
    mix.set_xticks(x, labels, rotation=30, ha="right")
    mix.set_title(_title("prediction_mix", checks.get("prediction_mix")))
    mix.legend()
    name, reference, current = (
        ("confidence", profile.confidence, window.confidence)
        if profile.confidence is not None
        else ("value", profile.values, window.values)
    )
    if reference is not None and current is not None:
        _histograms(spread, reference, current, _title(name, checks.get(name)))
    _write(figure, path)


def _embedding(check: Check, path: Path) -> None:
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    axis.hist(check.null, bins=40, color="grey", label="permuted (no drift)")
    axis.axvline(check.statistic, color="red", label="window")
    axis.set_xlabel("squared MMD")
    axis.set_title(_title("embedding", check))
    axis.legend()
    _write(figure, path)


def _histograms(axis: Axes, reference: np.ndarray, current: np.ndarray, title: str) -> None:
    bins = np.histogram_bin_edges(np.concatenate([reference, current]), bins=30)
    axis.hist(reference, bins=bins, density=True, alpha=0.5, label="reference")
    axis.hist(current, bins=bins, density=True, alpha=0.5, label="window")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)


def _title(name: str, check: Check | None) -> str:
    if check is None:
        return name
    return f"{name}: p={check.p_value:.2g}, Holm {check.adjusted_p:.2g}{' FIRED' if check.fired else ''}"


def _write(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=80)
