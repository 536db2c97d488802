"""Change detection: a before and an after image of one place in, a per-pixel change mask out.

The network is a Siamese U-Net (:mod:`lensops.model.siamese_unet`); its logits are trained
with binary cross-entropy plus Dice loss (cross-entropy alone lets a rare change class shrink to
nothing; Dice alone trains unsteadily), and scored on the change class by IoU, F1, precision and
recall over all test pixels. An answer carries the mask as a PNG, the changed fraction and the
connected changed regions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from lensops.model import masks
from lensops.model.tasks.base import LossFn, Report, Task

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lensops.config import LensopsConfig, ModelConfig, TrainConfig

THRESHOLD = 0.5
"""Change probability from which a pixel counts as changed."""
AGREEMENT_IOU = 0.8
"""Two answers agree when their masks overlap at least this much (shadow traffic)."""
DECODER_WIDTH = 64
SHOWN = 6
"""Test tiles drawn in the run's figure: those with the most change."""
SMOOTH = 1.0
"""Added to both sides of the Dice ratio: a tile without change and an empty prediction score 1."""


class Region(BaseModel):
    box: list[int] = Field(description="[x0, y0, x1, y1] in mask pixels, x1 and y1 exclusive.")
    area: int = Field(description="Changed pixels in the region.")


class ChangeAnswer(BaseModel):
    mask: str = Field(
        description="Base64 PNG, one channel, 255 where changed, at the model's input size "
        "(`preprocess.image_size` of the spec in /model), not the upload's.",
        json_schema_extra={"format": "byte"},
    )
    changed_fraction: float = Field(ge=0, le=1, description="Share of the mask's pixels that changed.")
    regions: list[Region] = Field(description="The 8-connected changed regions, largest first.")


class ChangeDetection(Task):
    name = "change_detection"
    inputs = ("before", "after")
    target_image = "mask"
    epoch_metrics = ("iou", "f1")
    promotion_metric = "iou"
    figure_examples = 64
    answer_image = "mask"
    answer_fields = ChangeAnswer

    def check_config(self, cfg: LensopsConfig) -> None:
        if not cfg.model.architecture.startswith("timm:"):
            raise ValueError("model.task=change_detection needs a timm:<name> model.architecture (the encoder)")
        if cfg.serve.runtime == "onnxruntime" or cfg.batch.runtime == "onnxruntime":
            raise ValueError("change_detection models answer on torch: set serve.runtime and batch.runtime to torch")

    def targets(self, rows: pd.DataFrame, target_column: str | None) -> np.ndarray:
        return rows[self.target_image].to_numpy()

    def head(self, in_features: int, classes: Sequence[str]) -> nn.Module:
        return nn.Conv2d(in_features, 1, kernel_size=1)

    def build_network(self, cfg: ModelConfig, classes: Sequence[str], load_weights: bool = True) -> nn.Module:
        from lensops.model import siamese_unet

        head = self.head(DECODER_WIDTH, classes)
        return siamese_unet.build(cfg, head, DECODER_WIDTH, load_weights)

    def loss_fn(self, cfg: TrainConfig) -> LossFn:
        return _bce_dice

    def batch_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        changed = logits.squeeze(1) > 0  # probability above THRESHOLD
        truth = targets.bool()
        return {
            "tp": (changed & truth).sum(),
            "fp": (changed & ~truth).sum(),
            "fn": (~changed & truth).sum(),
        }

    def sum_names(self) -> tuple[str, ...]:
        return ("tp", "fp", "fn")

    def epoch_summary(self, sums: Mapping[str, float], count: float) -> dict[str, float]:
        scores = pixel_scores(sums["tp"], sums["fp"], sums["fn"])
        return {name: scores[name] for name in self.epoch_metrics}

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(1).sigmoid()

    def answers(self, outputs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [_answer(probabilities) for probabilities in outputs]

    def agrees(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        return masks.iou(masks.from_png(first["mask"]), masks.from_png(second["mask"])) >= AGREEMENT_IOU

    def metrics(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
        return mask_metrics(targets.astype(bool), outputs >= THRESHOLD)

    def report(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> Report:
        metrics = self.metrics(targets, outputs, classes)
        text = "\n".join(f"{name}: {value:.4f}" for name, value in metrics.items())
        per_tile = [masks.iou(t, o >= THRESHOLD) for t, o in zip(targets.astype(bool), outputs, strict=True)]
        return Report(text=text, tables={"evaluation/per_tile_iou.json": {"iou": per_tile}})

    def examples_figure(self, batch: Mapping[str, np.ndarray], outputs: np.ndarray) -> Figure:
        from lensops.model.tasks import plots  # matplotlib only where a figure is drawn

        shown = most_changed(batch["target"], SHOWN)
        truth, predicted = batch["target"][shown].astype(bool), outputs[shown] >= THRESHOLD
        return plots.change_figure(batch["before"][shown], batch["after"][shown], truth, predicted)


def most_changed(targets: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` masks with the most changed pixels, most first."""
    changed_pixels = targets.reshape(len(targets), -1).sum(1, dtype=np.int64)
    return np.argsort(-changed_pixels, kind="stable")[:count]


def _bce_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-tile mean binary cross-entropy plus per-tile Dice loss, summed over the batch."""
    logits, targets = logits.float().squeeze(1).flatten(1), targets.float().flatten(1)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    probabilities = logits.sigmoid()
    overlap = (probabilities * targets).sum(1)
    dice = 1 - (2 * overlap + SMOOTH) / (probabilities.sum(1) + targets.sum(1) + SMOOTH)
    return (bce + dice).sum()


def pixel_scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """IoU, F1, precision and recall of the change class from pixel counts (0 where undefined)."""

    def ratio(numerator: float, denominator: float) -> float:
        return float(numerator / denominator) if denominator else 0.0

    return {
        "iou": ratio(tp, tp + fp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def mask_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """:func:`pixel_scores` of boolean masks, over all their pixels together."""
    tp = np.logical_and(predicted, truth).sum()
    return pixel_scores(tp, np.logical_and(predicted, ~truth).sum(), np.logical_and(~predicted, truth).sum())


def _answer(probabilities: np.ndarray) -> dict[str, Any]:
    changed = probabilities >= THRESHOLD
    certainty = np.where(changed, probabilities, 1 - probabilities)
    return {
        "prediction": masks.change_class(changed),
        "confidence": float(certainty.mean()),
        "changed_fraction": float(changed.mean()),
        "regions": masks.regions(changed),
        "mask": masks.to_png(changed),
    }
