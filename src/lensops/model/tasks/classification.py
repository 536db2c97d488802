"""Single-label classification: softmax over the label map, cross-entropy, macro F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lensops.model.tasks.base import LossFn, Report, Task

if TYPE_CHECKING:
    import pandas as pd

    from lensops.config import TrainConfig


class Classification(Task):
    name = "classification"
    epoch_metrics = ("accuracy",)
    promotion_metric = "macro_f1"
    live_metric = "accuracy"

    def targets(self, rows: pd.DataFrame, target_column: str | None) -> np.ndarray:
        return rows["label_index"].to_numpy(dtype=np.int64)

    def head(self, in_features: int, classes: Sequence[str]) -> nn.Module:
        return nn.Linear(in_features, len(classes))

    def loss_fn(self, cfg: TrainConfig) -> LossFn:
        loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")
        return lambda logits, targets: loss(logits.float(), targets.long())

    def batch_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": (logits.argmax(1) == targets).sum()}

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    def answers(self, outputs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [_answer(row, classes) for row in outputs]

    def agrees(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        return first["prediction"] == second["prediction"]

    def target_of(self, truth: object, classes: Sequence[str]) -> int:
        if not isinstance(truth, str) or truth not in classes:
            raise ValueError(f"label {truth!r} is not one of the model's classes: {', '.join(classes)}")
        return list(classes).index(truth)

    def outputs_of(self, logged: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> np.ndarray:
        return np.array([[dict(row["probabilities"])[c] for c in classes] for row in logged], dtype=np.float64)

    def metrics(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
        matrix = confusion(targets, outputs.argmax(1), len(classes))
        return {"accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)), "macro_f1": float(_f1(matrix).mean())}

    def report(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> Report:
        from lensops.model.tasks import plots  # matplotlib only where a report is drawn

        matrix = confusion(targets, outputs.argmax(1), len(classes))
        rows = per_class(matrix, classes)
        return Report(
            text=per_class_text(rows, self.metrics(targets, outputs, classes)),
            figures={"plots/confusion_matrix.png": plots.confusion_figure(matrix, classes)},
            tables={"evaluation/per_class.json": {"per_class": rows}},
        )


def _answer(probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    best = int(probabilities.argmax())
    return {
        "prediction": classes[best],
        "confidence": float(probabilities[best]),
        "probabilities": {c: float(p) for c, p in zip(classes, probabilities, strict=True)},
    }


def confusion(targets: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class)."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio that is 0 where the denominator is 0 (an absent or never-predicted class)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hits = np.diag(matrix).astype(float)
    return _ratio(hits, matrix.sum(0).astype(float)), _ratio(hits, matrix.sum(1).astype(float))


def _f1(matrix: np.ndarray) -> np.ndarray:
    precision, recall = _precision_recall(matrix)
    return _ratio(2 * precision * recall, precision + recall)


def per_class(matrix: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of every class."""
    precision, recall = _precision_recall(matrix)
    f1, support = _f1(matrix), matrix.sum(1)
    return [
        {
            "class": c,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    ]


def per_class_text(rows: list[dict[str, Any]], metrics: Mapping[str, float]) -> str:
    """The per-class table as aligned text, with the overall metrics below it."""
    width = max(12, *(len(r["class"]) for r in rows))
    lines = [f"{'class':<{width}}  precision  recall      f1  support"]
    lines += [
        f"{r['class']:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}"
        for r in rows
    ]
    lines.append("")
    lines += [f"{name}: {value:.4f}" for name, value in metrics.items()]
    return "\n".join(lines)
