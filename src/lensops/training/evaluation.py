"""Evaluation of a model on a split through the one forward path: metrics and the task's report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray
from torch import nn

from lensops.model.artifact import ModelSpec
from lensops.model.forward import Forward
from lensops.model.tasks import Report, Task


@dataclass
class Evaluation:
    task: Task
    classes: list[str]
    targets: np.ndarray
    outputs: np.ndarray
    """The task's activated outputs: class probabilities (N, C), values (N,), ..."""
    embeddings: np.ndarray | None = None
    """Penultimate-layer features (N, D), when asked for."""

    @property
    def metrics(self) -> dict[str, float]:
        return self.task.metrics(self.targets, self.outputs, self.classes)

    def report(self) -> Report:
        return self.task.report(self.targets, self.outputs, self.classes)


def evaluate(
    model: nn.Module, spec: ModelSpec, ds: ray.data.Dataset, batch_size: int = 64, embed: bool = False
) -> Evaluation:
    """Run ``model`` over every batch of ``ds`` (uint8 inputs + targets) in this process; with
    ``embed``, keep each example's embedding too."""
    forward = Forward(model.eval(), spec)
    targets, outputs, embeddings = [], [], []
    for batch in ds.iter_torch_batches(batch_size=batch_size):
        targets.append(batch["target"].numpy())
        if embed:
            batch_outputs, batch_embeddings = forward.outputs_and_embeddings(batch)
            embeddings.append(batch_embeddings)
        else:
            batch_outputs = forward.outputs(batch)
        outputs.append(batch_outputs)
    features = np.concatenate(embeddings) if embeddings else None
    return Evaluation(spec.task, spec.classes, np.concatenate(targets), np.concatenate(outputs), features)
