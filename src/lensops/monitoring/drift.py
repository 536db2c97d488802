"""Drift checks: a window of new data against a version's reference profile, as one decision.

Every check is a two-sample (or one-sided) test with a p-value:

- ``input_mean[c]``, ``input_std[c]``: Kolmogorov-Smirnov on per-image channel means (brightness,
  colour) and standard deviations (contrast, blur, noise); channels that are copies of an
  earlier one (grey images) are tested once;
- ``embedding``: maximum mean discrepancy of penultimate-layer embeddings (Gaussian kernel,
  median-distance bandwidth) with a permutation p-value, the multivariate check that sees
  shifts no single statistic shows;
- ``prediction_mix``: chi-square of the predicted labels against the reference's mix;
- ``confidence`` (or ``value`` for regression): Kolmogorov-Smirnov;
- ``live_<metric>``: one-sided Mann-Whitney of the live metric of images with feedback against
  the reference's, worse only;
- ``confidence[<class>]``: per predicted class with enough images in both samples.

The checks run together, so their p-values are Holm-corrected: ``monitor.alpha`` is the
false-alarm rate of the whole decision, not of each check. scipy does the tests; the MMD is
a few lines of numpy.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from lensops.config import MonitorConfig
from lensops.monitoring.profile import Profile
from lensops.monitoring.window import Window

Status = Literal["drift", "ok", "insufficient_data"]


@dataclass(frozen=True)
class Check:
    name: str
    statistic: float
    p_value: float
    size: int
    """Images of the window the check used."""
    adjusted_p: float = 1.0
    """Holm-adjusted p-value; the check fires when it is at most ``alpha``."""
    fired: bool = False
    null: list[float] = field(default_factory=list, repr=False)
    """The permutation statistics behind ``p_value``, where the test has them (for the plot)."""


@dataclass
class Decision:
    status: Status
    window: int
    alpha: float
    checks: list[Check]

    @property
    def fired(self) -> list[str]:
        return [check.name for check in self.checks if check.fired]

    def line(self) -> str:
        """The decision in one line, as the monitor prints it."""
        reason = {
            "drift": f"fired: {', '.join(self.fired)}",
            "ok": f"{len(self.checks)} checks, none below alpha={self.alpha:g} after Holm",
            "insufficient_data": "too few images for a decision",
        }[self.status]
        return f"{self.status}: {self.window} images; {reason}"

    def as_dict(self) -> dict[str, Any]:
        checks = [{k: v for k, v in asdict(check).items() if k != "null"} for check in self.checks]
        return {
            "status": self.status,
            "window": self.window,
            "alpha": self.alpha,
            "fired": self.fired,
            "checks": checks,
        }


def decide(profile: Profile, window: Window, settings: MonitorConfig) -> Decision:
    """Run every check the profile and the window allow, and decide for all of them at once."""
    if window.size < settings.min_window:
        return Decision("insufficient_data", window.size, settings.alpha, [])
    checks = holm(run_checks(profile, window, settings), settings.alpha)
    status: Status = "drift" if any(check.fired for check in checks) else "ok"
    return Decision(status, window.size, settings.alpha, checks)


def run_checks(profile: Profile, window: Window, settings: MonitorConfig) -> list[Check]:
    checks = input_checks(profile, window)
    mix = mix_check("prediction_mix", profile.labels, window.labels)
    checks += [mix] if mix else []
    for name, reference, current in (
        ("confidence", profile.confidence, window.confidence),
        ("value", profile.values, window.values),
    ):
        if reference is not None and current is not None and len(reference):
            checks.append(ks_check(name, reference, current))
    scores = window.live_scores
    if profile.live_metric and profile.live_scores is not None and scores is not None and len(scores):
        checks.append(live_check(profile, scores))
    checks += class_checks(profile, window, settings.min_per_class)
    if profile.embeddings is not None and window.embeddings is not None:
        # a permutation p-value is never below 1/(permutations+1): enough of them that the
        # embedding check can still fire after Holm's scaling by the number of checks
        permutations = max(settings.permutations, math.ceil(2 * (len(checks) + 1) / settings.alpha))
        checks.append(mmd_check("embedding", profile.embeddings, window.embeddings, permutations, settings.seed))
    return checks


def input_checks(profile: Profile, window: Window) -> list[Check]:
    checks = []
    for channel in distinct_channels(profile.input_mean):
        for stat, reference, current in (
            ("input_mean", profile.input_mean, window.input_mean),
            ("input_std", profile.input_std, window.input_std),
        ):
            checks.append(ks_check(f"{stat}[{channel}]", reference[:, channel], current[:, channel]))
    return checks


def distinct_channels(per_image: np.ndarray, tolerance: float = 1e-6) -> list[int]:
    """The channels that are not a copy of an earlier one (a grey image repeats one three times)."""
    kept: list[int] = []
    for channel in range(per_image.shape[1]):
        if not any(np.allclose(per_image[:, channel], per_image[:, k], atol=tolerance) for k in kept):
            kept.append(channel)
    return kept


def ks_check(name: str, reference: np.ndarray, current: np.ndarray) -> Check:
    result = stats.ks_2samp(reference, current)
    return Check(name, float(result.statistic), float(result.pvalue), len(current))


def mix_check(name: str, reference: Sequence[str], current: Sequence[str]) -> Check | None:
    """Chi-square of the window's label counts against the reference's proportions (each
    reference count plus one, so that a label the reference never predicted is not impossible)."""
    labels = sorted(set(reference) | set(current))
    if len(labels) < 2 or not current:
        return None
    expected = Counter(reference)
    proportions = np.array([expected[label] + 1 for label in labels], dtype=np.float64)
    proportions /= proportions.sum()
    seen = Counter(current)
    observed = np.array([seen[label] for label in labels], dtype=np.float64)
    result = stats.chisquare(observed, proportions * observed.sum())
    return Check(name, float(result.statistic), float(result.pvalue), len(current))


def live_check(profile: Profile, scores: np.ndarray) -> Check:
    """Whether the live metric of the window is worse than the reference's (one-sided)."""
    worse = "less" if profile.live_higher_is_better else "greater"
    result = stats.mannwhitneyu(scores, profile.live_scores, alternative=worse)
    return Check(f"live_{profile.live_metric}", float(np.mean(scores)), float(result.pvalue), len(scores))


def class_checks(profile: Profile, window: Window, min_per_class: int) -> list[Check]:
    """Confidence per predicted class, for classes with ``min_per_class`` images on both sides."""
    if profile.confidence is None or window.confidence is None:
        return []
    reference_labels, current_labels = np.array(profile.labels), np.array(window.labels)
    checks = []
    for label in sorted(set(profile.labels)):
        reference = profile.confidence[reference_labels == label]
        current = window.confidence[current_labels == label]
        if min(len(reference), len(current)) >= min_per_class:
            checks.append(ks_check(f"confidence[{label}]", reference, current))
    return checks


def mmd_check(name: str, reference: np.ndarray, current: np.ndarray, permutations: int, seed: int) -> Check:
    """Squared MMD (biased estimate) with a permutation p-value.

    With the pooled kernel matrix ``K`` and a vector ``s`` holding ``1/n`` for reference rows and
    ``-1/m`` for window rows, the statistic is ``s @ K @ s``; all permutations are scored in one
    matrix product."""
    pooled = np.concatenate([reference, current]).astype(np.float64)
    squared = _squared_distances(pooled)
    bandwidth = np.median(squared[np.triu_indices(len(pooled), k=1)])
    kernel = np.exp(-squared / max(bandwidth, 1e-12))
    n, m = len(reference), len(current)
    signs = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(signs) for _ in range(permutations)], axis=1)
    null = np.einsum("ip,ip->p", kernel @ shuffled, shuffled)
    observed = float(signs @ kernel @ signs)
    p_value = (1 + int(np.sum(null >= observed))) / (1 + permutations)
    return Check(name, observed, p_value, m, null=null.tolist())


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = (points**2).sum(axis=1)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * points @ points.T, 0.0)


def holm(checks: Sequence[Check], alpha: float) -> list[Check]:
    """Holm's step-down correction: the k-th smallest p-value is scaled by (m - k + 1), then made
    monotone; a check fires when its adjusted p-value is at most ``alpha``."""
    order = sorted(range(len(checks)), key=lambda i: checks[i].p_value)
    adjusted = [1.0] * len(checks)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(checks) - rank) * checks[index].p_value))
        adjusted[index] = running
    return [replace(check, adjusted_p=p, fired=p <= alpha) for check, p in zip(checks, adjusted, strict=True)]
