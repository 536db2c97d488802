"""The test split's most confident mistakes, with where the model looked (Grad-CAM), as one
figure for the training run: the first images a person should look at after a fit."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import ray
from matplotlib.figure import Figure
from torch import nn

from lensops.model.artifact import ModelSpec
from lensops.model.explain import grad_cam, overlay
from lensops.model.forward import Forward

SHOWN = 8


@dataclass(frozen=True)
class Mistake:
    confidence: float
    image: np.ndarray
    """(3, H, W) uint8, the model's input."""
    truth: int
    said: int


def confident_mistakes(model: nn.Module, spec: ModelSpec, ds: ray.data.Dataset, count: int = SHOWN) -> list[Mistake]:
    """The ``count`` wrong answers of a classifier on ``ds`` given with the most confidence."""
    forward = Forward(model.eval(), spec)
    image = spec.task.inputs[0]
    kept: list[tuple[float, int, Mistake]] = []
    for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
        outputs = forward.outputs(batch)
        said = outputs.argmax(axis=1)
        for i in np.flatnonzero(said != batch["target"]):
            mistake = Mistake(float(outputs[i, said[i]]), batch[image][i], int(batch["target"][i]), int(said[i]))
            heapq.heappush(kept, (mistake.confidence, id(mistake), mistake))
            if len(kept) > count:
                heapq.heappop(kept)
    return [mistake for _, _, mistake in sorted(kept, key=lambda entry: -entry[0])]


def mistakes_figure(model: nn.Module, spec: ModelSpec, mistakes: list[Mistake]) -> Figure:
    """Each mistake's image under the Grad-CAM of the class it wrongly gave."""
    forward = Forward(model.eval(), spec)
    batch = {spec.task.inputs[0]: np.stack([m.image for m in mistakes])}
    explained = grad_cam(forward, batch, [m.said for m in mistakes])
    columns = min(4, len(mistakes))
    rows = -(-len(mistakes) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows))
    for index, (mistake, explanation) in enumerate(zip(mistakes, explained, strict=True)):
        ax = fig.add_subplot(rows, columns, index + 1)
        ax.imshow(overlay(mistake.image, explanation.cam))
        truth, said = spec.classes[mistake.truth], spec.classes[mistake.said]
        ax.set_title(f"{truth}, said {said}\n({mistake.confidence:.2f})", fontsize=9)
        ax.axis("off")
    fig.suptitle("most confident mistakes (Grad-CAM of the class given)", fontsize=10)
    fig.tight_layout()
    return fig
