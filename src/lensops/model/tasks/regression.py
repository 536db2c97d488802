"""Regression of one number per image (a numeric manifest column): smooth L1 loss, MAE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lensops.model.tasks.base import LossFn, Report, Task

if TYPE_CHECKING:
    import pandas as pd

    from lensops.config import LensopsConfig, TrainConfig

AGREEMENT = 0.05
"""Two values agree within this fraction of the first (1e-6 around zero)."""


class Regression(Task):
    name = "regression"
    epoch_metrics = ("mae",)
    promotion_metric = "mae"
    lower_is_better = frozenset({"loss", "mae", "rmse"})
    live_metric = "mae"

    def check_config(self, cfg: LensopsConfig) -> None:
        if not cfg.data.target_column:
            raise ValueError("model.task=regression needs data.target_column (a numeric manifest column)")

    def targets(self, rows: pd.DataFrame, target_column: str | None) -> np.ndarray:
        return rows[target_column].to_numpy(dtype=np.float32)

    def head(self, in_features: int, classes: Sequence[str]) -> nn.Module:
        return nn.Linear(in_features, 1)

    def loss_fn(self, cfg: TrainConfig) -> LossFn:
        loss = nn.SmoothL1Loss(reduction="sum")
        return lambda logits, targets: loss(logits.float().squeeze(1), targets.float())

    def batch_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mae": (logits.float().squeeze(1) - targets).abs().sum()}

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(1)

    def answers(self, outputs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
        return [{"prediction": float(value), "confidence": None} for value in outputs]

    def agrees(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        a, b = first["prediction"], second["prediction"]
        return abs(b - a) <= max(AGREEMENT * abs(a), 1e-6)

    def metric_label(self, answer: Mapping[str, Any]) -> str:
        return "value"  # a number per answer would make one time series per value

    def target_of(self, truth: object, classes: Sequence[str]) -> float:
        if isinstance(truth, bool) or not isinstance(truth, int | float) or not np.isfinite(truth):
            raise ValueError(f"a regression model takes a finite number as its value, not {truth!r}")
        return float(truth)

    def outputs_of(self, logged: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> np.ndarray:
        return np.array([row["value"] for row in logged], dtype=np.float64)

    def metrics(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
        errors = outputs - targets
        return {"mae": float(np.abs(errors).mean()), "rmse": float(np.sqrt((errors**2).mean()))}

    def report(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> Report:
        from lensops.model.tasks import plots  # matplotlib only where a report is drawn

        text = "\n".join(f"{k}: {v:.4f}" for k, v in self.metrics(targets, outputs, classes).items())
        return Report(text=text, figures={"plots/residuals.png": plots.residual_figure(targets, outputs)})
