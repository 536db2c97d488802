"""Evaluation of a model on a split: metrics, per-class report and plots."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import numpy as np
import ray
import torch
from matplotlib.figure import Figure
from sklearn import metrics as skm
from torch import nn

from lensops.artifact import ModelSpec
from lensops.preprocess import normalization

LOWER_IS_BETTER = {"mae", "rmse", "loss"}


@dataclass
class Evaluation:
    task: str
    classes: list[str]
    targets: np.ndarray
    outputs: np.ndarray
    """Class probabilities (N, C) for classification, predictions (N,) for regression."""

    @property
    def predictions(self) -> np.ndarray:
        return self.outputs.argmax(1) if self.task == "classification" else self.outputs

    @property
    def metrics(self) -> dict[str, float]:
        if self.task == "regression":
            errors = self.outputs - self.targets
            return {"mae": float(np.abs(errors).mean()), "rmse": float(np.sqrt((errors**2).mean()))}
        return {
            "accuracy": float(skm.accuracy_score(self.targets, self.predictions)),
            "macro_f1": float(skm.f1_score(self.targets, self.predictions, average="macro", zero_division=0)),
        }

    def per_class(self) -> list[dict[str, float | str]]:
        """Precision, recall, F1 and support per class (classification only)."""
        labels = list(range(len(self.classes)))
        p, r, f, s = skm.precision_recall_fscore_support(self.targets, self.predictions, labels=labels, zero_division=0)
        return [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(self.classes)
        ]

    def confusion(self) -> np.ndarray:
        return skm.confusion_matrix(self.targets, self.predictions, labels=list(range(len(self.classes))))


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def default_metric(task: str) -> str:
    return "mae" if task == "regression" else "macro_f1"


@torch.inference_mode()
def evaluate(model: nn.Module, spec: ModelSpec, ds: ray.data.Dataset, batch_size: int = 64) -> Evaluation:
    """Run ``model`` over every batch of ``ds`` (uint8 images + targets) on the driver."""
    device = next(model.parameters()).device
    normalize = normalization(spec.preprocess)
    targets, outputs = [], []
    for batch in ds.iter_torch_batches(batch_size=batch_size, device=device):
        out = model.eval()(normalize(batch["image"])).float()
        out = out.squeeze(1) if spec.task == "regression" else out.softmax(1)
        targets.append(batch["target"].cpu().numpy())
        outputs.append(out.cpu().numpy())
    return Evaluation(spec.task, spec.classes, np.concatenate(targets), np.concatenate(outputs))


def confusion_figure(evaluation: Evaluation) -> Figure:
    matrix = evaluation.confusion()
    size = 1.2 + 0.6 * len(evaluation.classes)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = range(len(evaluation.classes))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(evaluation.classes, rotation=45, ha="right")
    ax.set_yticklabels(evaluation.classes)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    return fig


def residual_figure(evaluation: Evaluation) -> Figure:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.scatter(evaluation.targets, evaluation.outputs - evaluation.targets, s=8, alpha=0.6)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set(xlabel="target", ylabel="prediction - target", title="residuals")
    fig.tight_layout()
    return fig


def report_text(evaluation: Evaluation) -> str:
    """A readable per-class table (classification) or the error summary (regression)."""
    if evaluation.task == "regression":
        return "\n".join(f"{k}: {v:.4f}" for k, v in evaluation.metrics.items())
    return skm.classification_report(
        evaluation.targets,
        evaluation.predictions,
        labels=list(range(len(evaluation.classes))),
        target_names=evaluation.classes,
        digits=4,
        zero_division=0,
    )
