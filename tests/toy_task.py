"""A task the library has never heard of, defined only in the test suite: a dust score.

It has its own head (a small MLP with one output), loss (binary cross-entropy on "is it
dusty"), decoding (a score in [0, 1] beside the label it implies), metric (Brier score) and
report. ``model.task: toy_task:DustScore`` selects it; Ray workers and Serve replicas import
it from ``tests/`` (the test cluster has it on its PYTHONPATH).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from lensops.config import TrainConfig
from lensops.model.tasks import Report, Task
from lensops.model.tasks.base import LossFn

POSITIVE = "dusty"


class DustScore(Task):
    name = "dust-score"
    epoch_metrics = ("brier",)
    promotion_metric = "brier"
    lower_is_better = frozenset({"loss", "brier"})

    def targets(self, rows: pd.DataFrame, target_column: str | None) -> np.ndarray:
        return (rows["label"] == POSITIVE).to_numpy(dtype=np.float32)

    def head(self, in_features: int, classes: Sequence[str]) -> nn.Module:
        return nn.Sequential(nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, 1))

    def loss_fn(self, cfg: TrainConfig) -> LossFn:
        loss = nn.BCEWithLogitsLoss(reduction="sum")
        return lambda logits, targets: loss(logits.float().squeeze(1), targets.float())

    def batch_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"brier": ((self.activate(logits) - targets.float()) ** 2).sum()}

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(1).sigmoid()

    def answers(self, outputs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {
                "prediction": POSITIVE if score >= 0.5 else "clean",
                "confidence": float(max(score, 1 - score)),
                "dust_score": float(score),
            }
            for score in outputs
        ]

    def agrees(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        return first["prediction"] == second["prediction"]

    def metrics(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
        return {
            "brier": float(((outputs - targets) ** 2).mean()),
            "accuracy": float(((outputs >= 0.5) == (targets >= 0.5)).mean()),
        }

    def report(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> Report:
        lines = [f"{k}: {v:.4f}" for k, v in self.metrics(targets, outputs, classes).items()]
        return Report(text="\n".join(lines), tables={"evaluation/scores.json": {"scores": outputs.tolist()}})
