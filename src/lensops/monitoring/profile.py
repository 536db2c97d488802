"""The reference profile of a model version: what its data looked like when it was registered.

It is stored beside the weights and the spec (``profile.safetensors``: arrays plus JSON
metadata, no pickle) and holds

- per-image input statistics (per-channel mean and std of the model input) of a sample of the
  training split;
- penultimate-layer embeddings of a sample of the validation split;
- the predictions the model made on the validation split (their label mix, confidence and,
  for regression, values) and the per-example live metric (accuracy or absolute error).

Embeddings and predictions come from the validation split, not the training split: the
weights were fitted to the training images, whose embeddings sit closer to their class
centres than those of any new image would. New data drawn from the training distribution
would then look drifted. :mod:`lensops.monitoring.drift` compares a window of new data with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file, save_file

from lensops.model.artifact import ChannelStats
from lensops.monitoring.records import input_facts

if TYPE_CHECKING:
    from lensops.training.evaluation import Evaluation

PROFILE = "profile.safetensors"
FORMAT = "1"


@dataclass
class Profile:
    input_mean: np.ndarray
    """(n, C) per-image channel means of training images, 0..1."""
    input_std: np.ndarray
    """(n, C) per-image channel standard deviations."""
    labels: list[str]
    """The label of each validation prediction (the task's ``metric_label``)."""
    confidence: np.ndarray | None
    """(n,) confidence of each validation prediction; None when the task has none."""
    values: np.ndarray | None
    """(n,) predicted value of each validation example; None unless predictions are numbers."""
    live_metric: str | None
    live_scores: np.ndarray | None
    """(n,) the task's live metric of each validation prediction against its target."""
    live_higher_is_better: bool = True
    embeddings: np.ndarray | None = None
    """(n, D) validation embeddings; None when the network has no task head to take them from."""

    def save(self, directory: str | Path) -> Path:
        arrays = {"input_mean": self.input_mean.astype(np.float32), "input_std": self.input_std.astype(np.float32)}
        names = sorted(set(self.labels))
        arrays["label_codes"] = np.array([names.index(label) for label in self.labels], dtype=np.int32)
        optional = {
            "confidence": self.confidence,
            "values": self.values,
            "live_scores": self.live_scores,
            "embeddings": None if self.embeddings is None else self.embeddings.astype(np.float16),
        }
        arrays |= {name: np.ascontiguousarray(array) for name, array in optional.items() if array is not None}
        metadata = {
            "format": FORMAT,
            "label_names": json.dumps(names),
            "live_metric": self.live_metric or "",
            "live_higher_is_better": json.dumps(self.live_higher_is_better),
        }
        path = Path(directory) / PROFILE
        save_file(arrays, path, metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        from safetensors import safe_open

        arrays = load_file(path)
        with safe_open(path, framework="numpy") as opened:
            metadata = opened.metadata()
        names = json.loads(metadata["label_names"])
        embeddings = arrays.get("embeddings")
        return cls(
            input_mean=arrays["input_mean"],
            input_std=arrays["input_std"],
            labels=[names[code] for code in arrays["label_codes"]],
            confidence=arrays.get("confidence"),
            values=arrays.get("values"),
            live_metric=metadata["live_metric"] or None,
            live_scores=arrays.get("live_scores"),
            live_higher_is_better=json.loads(metadata["live_higher_is_better"]),
            embeddings=None if embeddings is None else embeddings.astype(np.float32),
        )


@dataclass
class InputStats:
    """Per-image input statistics of a split, and the per-channel statistics over all its pixels."""

    mean: np.ndarray
    std: np.ndarray
    channels: ChannelStats


def input_stats(images: Iterable[np.ndarray]) -> InputStats:
    """The statistics of batches of uint8 model inputs (N, C, H, W), all of one size."""
    means, stds, pixels = [], [], 0
    for batch in images:
        mean, std = input_facts(batch)
        means.append(mean)
        stds.append(std)
        pixels += batch.shape[0] * batch.shape[2] * batch.shape[3]
    mean, std = np.concatenate(means), np.concatenate(stds)
    overall = mean.mean(axis=0, dtype=np.float64)  # every image has as many pixels
    squares = (std.astype(np.float64) ** 2 + mean.astype(np.float64) ** 2).mean(axis=0)
    spread = np.sqrt(np.maximum(squares - overall**2, 0.0))
    return InputStats(mean, std, ChannelStats(mean=tuple(overall), std=tuple(spread), pixels=pixels))


def build(train_inputs: InputStats, validation: Evaluation, images: int, embeddings: int, seed: int) -> Profile:
    """A profile from the training split's input statistics and a validation-split evaluation
    (run with embeddings where the network has a task head), sampled down to ``images`` and
    ``embeddings`` rows."""
    rng = np.random.default_rng(seed)
    kept = _sample(rng, len(train_inputs.mean), images)
    task, classes = validation.task, validation.classes
    answers = task.answers(validation.outputs, classes)
    confidence = [answer["confidence"] for answer in answers]
    numbers = all(isinstance(answer["prediction"], int | float) for answer in answers)
    embedded = validation.embeddings
    return Profile(
        input_mean=train_inputs.mean[kept],
        input_std=train_inputs.std[kept],
        labels=[task.metric_label(answer) for answer in answers],
        confidence=None if None in confidence else np.array(confidence, dtype=np.float32),
        values=np.array([a["prediction"] for a in answers], dtype=np.float32) if numbers and answers else None,
        live_metric=task.live_metric,
        live_scores=_live_scores(validation),
        live_higher_is_better=task.higher_is_better(task.live_metric or ""),
        embeddings=None if embedded is None else embedded[_sample(rng, len(embedded), embeddings)],
    )


def _live_scores(validation: Evaluation) -> np.ndarray | None:
    """The task's live metric of each example alone (1/0 for accuracy, the error for MAE)."""
    task, metric = validation.task, validation.task.live_metric
    if metric is None:
        return None
    one = [slice(i, i + 1) for i in range(len(validation.targets))]
    return np.array(
        [task.metrics(validation.targets[i], validation.outputs[i], validation.classes)[metric] for i in one]
    )


def _sample(rng: np.random.Generator, size: int, at_most: int) -> np.ndarray:
    return np.sort(rng.choice(size, at_most, replace=False)) if size > at_most else np.arange(size)
