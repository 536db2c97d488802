"""How well the drift checks work on a given model and data: the false-alarm rate on windows
drawn from unshifted images, and the detection rate under each shift (:mod:`shifts`).

Images are scored once per shift in this process (``score``); windows are then resampled
from the scores with fixed seeds, so a sweep of hundreds of decisions costs one forward pass
per image and shift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lensops.config import MonitorConfig
from lensops.model.forward import Predictor
from lensops.model.preprocess import image_to_uint8
from lensops.monitoring import drift, records
from lensops.monitoring.profile import Profile
from lensops.monitoring.records import input_facts
from lensops.monitoring.shifts import SHIFTS
from lensops.monitoring.window import Window


def score(predictor: Predictor, images: Iterable[Image.Image], batch_size: int = 64) -> Window:
    """The window of ``images`` as the monitor sees them: scored by ``predictor`` into prediction
    records, read back as the monitor reads a batch job's output."""
    spec, pixels = predictor.spec, [image_to_uint8(image, predictor.spec.preprocess) for image in images]
    rows = []
    for start in range(0, len(pixels), batch_size):
        batch = np.stack(pixels[start : start + batch_size])
        answers = predictor.predict({spec.task.inputs[0]: batch}, embed=True)
        for answer, mean, std in zip(answers, *(stat.tolist() for stat in input_facts(batch)), strict=True):
            rows.append({"status": records.OK, **records.answer_columns(answer), "input_mean": mean, "input_std": std})
    return Window.from_records(records.table(rows), spec)


def shifted(images: Sequence[Image.Image], shift: str, strength: float) -> list[Image.Image]:
    apply = SHIFTS[shift]
    return [apply(image, strength, index) for index, image in enumerate(images)]


def reference(window: Window) -> Profile:
    """A profile made of scored images (as training makes one of its validation split)."""
    return Profile(
        input_mean=window.input_mean,
        input_std=window.input_std,
        labels=window.labels,
        confidence=window.confidence,
        values=window.values,
        live_metric=None,
        live_scores=None,
        embeddings=window.embeddings,
    )


@dataclass
class Rate:
    """Decisions over resampled windows: how many said drift, and which checks fired."""

    windows: int = 0
    drift: int = 0
    fired: Counter = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.drift / self.windows if self.windows else float("nan")

    def top(self, count: int = 3) -> str:
        return ", ".join(f"{name} {n}" for name, n in self.fired.most_common(count)) or "-"


def drift_rate(
    profile: Profile,
    pool: Window,
    size: int,
    windows: int,
    cfg: MonitorConfig,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> Rate:
    """Decide ``windows`` windows of ``size`` images drawn without replacement from ``pool``
    (``weights``: drawing probabilities, e.g. to change the class mix), each with its own seed."""
    counted = Rate()
    for index in range(windows):
        rng = np.random.default_rng(seed + index)
        picked = rng.choice(pool.size, size, replace=False, p=weights)
        decision = drift.decide(profile, pool.take(picked), cfg.model_copy(update={"seed": seed + index}))
        counted.windows += 1
        counted.drift += decision.status == "drift"
        counted.fired.update(decision.fired)
    return counted


def class_weights(labels: Sequence[str], favoured: str, share: float) -> np.ndarray:
    """Drawing probabilities that give images labelled ``favoured`` the expected ``share`` of a window."""
    chosen = np.array([label == favoured for label in labels])
    weights = np.where(chosen, share / chosen.sum(), (1 - share) / (~chosen).sum())
    return weights / weights.sum()
