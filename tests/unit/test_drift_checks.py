"""Drift checks on arrays with a known answer: Holm's correction, the MMD test's power and
size, the decision's rules, and the profile's file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lensops.config import MonitorConfig
from lensops.monitoring import drift, shifts
from lensops.monitoring.drift import Check
from lensops.monitoring.monitor import metric_name
from lensops.monitoring.profile import Profile
from lensops.monitoring.window import Window

SETTINGS = MonitorConfig(min_window=50)


def profile(rng: np.random.Generator, n: int = 600, dims: int = 32) -> Profile:
    return Profile(
        input_mean=rng.uniform(0.3, 0.6, (n, 3)),
        input_std=rng.uniform(0.1, 0.2, (n, 3)),
        labels=list(rng.choice(["clean", "dusty"], n, p=[0.7, 0.3])),
        confidence=rng.uniform(0.5, 1.0, n),
        values=None,
        live_metric="accuracy",
        live_scores=rng.binomial(1, 0.9, n).astype(float),
        embeddings=rng.normal(0, 1, (min(n, 300), dims)),
    )


def window(rng: np.random.Generator, n: int = 150, dims: int = 32, **change: float) -> Window:
    dusty = change.get("dusty", 0.3)
    return Window(
        input_mean=rng.uniform(0.3, 0.6, (n, 3)) + change.get("bright", 0.0),
        input_std=rng.uniform(0.1, 0.2, (n, 3)),
        labels=list(rng.choice(["clean", "dusty"], n, p=[1 - dusty, dusty])),
        confidence=rng.uniform(0.5, 1.0, n),
        values=None,
        embeddings=rng.normal(change.get("embedded", 0.0), 1, (n, dims)),
        live_scores=rng.binomial(1, change.get("accuracy", 0.9), 80).astype(float),
    )


def test_holm_scales_the_smallest_p_by_the_number_of_checks_and_stays_monotone() -> None:
    checks = [Check("a", 0, 0.004, 1), Check("b", 0, 0.02, 1), Check("c", 0, 0.03, 1), Check("d", 0, 0.5, 1)]
    adjusted = drift.holm(checks, alpha=0.05)
    assert [c.adjusted_p for c in adjusted] == pytest.approx([0.016, 0.06, 0.06, 0.5])
    assert [c.fired for c in adjusted] == [True, False, False, False]


def test_windows_from_the_reference_distribution_rarely_drift() -> None:
    rng = np.random.default_rng(0)
    reference = profile(rng)
    decisions = [drift.decide(reference, window(rng), SETTINGS.model_copy(update={"seed": s})) for s in range(40)]
    false_alarms = sum(d.status == "drift" for d in decisions)
    assert false_alarms <= 2, [d.fired for d in decisions if d.fired]


@pytest.mark.parametrize(
    ("change", "fired"),
    [
        ({"bright": 0.08}, "input_mean[0]"),
        ({"embedded": 0.25}, "embedding"),
        ({"dusty": 0.7}, "prediction_mix"),
        ({"accuracy": 0.6}, "live_accuracy"),
    ],
)
def test_each_kind_of_shift_fires_its_own_check(change: dict[str, float], fired: str) -> None:
    rng = np.random.default_rng(1)
    decision = drift.decide(profile(rng), window(rng, **change), SETTINGS)
    assert decision.status == "drift" and fired in decision.fired, decision.line()


def test_a_small_window_is_insufficient_data_and_grey_channels_are_tested_once() -> None:
    rng = np.random.default_rng(2)
    reference = profile(rng)
    assert drift.decide(reference, window(rng, n=20), SETTINGS).status == "insufficient_data"
    grey = rng.uniform(0, 1, (100, 1))
    assert drift.distinct_channels(np.repeat(grey, 3, axis=1)) == [0]
    assert drift.distinct_channels(rng.uniform(0, 1, (100, 3))) == [0, 1, 2]


def test_the_embedding_check_can_fire_after_holm_however_many_checks_there_are() -> None:
    rng = np.random.default_rng(3)
    decision = drift.decide(profile(rng), window(rng, embedded=1.0), SETTINGS.model_copy(update={"alpha": 0.001}))
    (embedding,) = [c for c in decision.checks if c.name == "embedding"]
    assert embedding.fired and len(embedding.null) >= 2 * len(decision.checks) / 0.001


def test_a_profile_survives_its_file_and_a_window_resamples(tmp_path: Path) -> None:
    original = profile(np.random.default_rng(4))
    loaded = Profile.load(original.save(tmp_path))
    assert loaded.labels == original.labels and loaded.live_metric == "accuracy" and loaded.live_higher_is_better
    np.testing.assert_allclose(loaded.input_mean, original.input_mean, rtol=1e-6)
    np.testing.assert_allclose(loaded.embeddings, original.embeddings, rtol=1e-3, atol=1e-3)  # float16 on disk
    sample = window(np.random.default_rng(5)).take(np.array([0, 2, 4]))
    assert sample.size == 3 and sample.input_mean.shape == (3, 3) and len(sample.live_scores) == 80


def test_check_names_become_mlflow_metric_names() -> None:
    assert metric_name("input_mean[0]") == "input_mean.0"
    assert metric_name("confidence[very dusty!]") == "confidence.very dusty_"


def test_shifts_change_what_they_name_and_nothing_at_strength_zero() -> None:
    rng = np.random.default_rng(6)
    image = Image.fromarray(rng.integers(60, 200, (32, 32, 3), dtype=np.uint8))
    pixels = np.asarray(image, dtype=np.float32)
    for name, apply in shifts.SHIFTS.items():
        assert np.array_equal(np.asarray(apply(image, 0.0, 0)), pixels), name
    assert np.asarray(shifts.brightness(image, 0.3)).mean() > pixels.mean() + 10
    assert np.asarray(shifts.contrast(image, -0.5)).std() < pixels.std() * 0.6
    assert np.asarray(shifts.blur(image, 2.0)).std() < pixels.std() * 0.6
    assert np.asarray(shifts.noise(image, 0.1)).astype(np.float32).std() > pixels.std()


def test_the_monitor_interval_reads_seconds_minutes_and_hours() -> None:
    from lensops.cli import _seconds
    from lensops.config import ConfigError

    assert [_seconds(text) for text in ("30s", "15m", "1.5h")] == [30, 900, 5400]
    for bad in ("15", "m", "-5m", "0s", "10d"):
        with pytest.raises(ConfigError, match="--every"):
            _seconds(bad)
