"""The task protocol: everything that differs between kinds of model lives behind it.

A task owns the image inputs of one example, the network's output layer, the training
targets and loss, the statistics summed over an epoch, how raw outputs decode into answers,
its offline metrics and report, and the metric that decides a promotion. Data loading,
training, evaluation, inference, sweeps and serving are written once against this class.

Like every module under ``lensops.model``, this one imports neither Ray nor MLflow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from lensops.model import backbones

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lensops.config import LensopsConfig, ModelConfig, TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits, targets) -> the loss summed over the batch."""


@dataclass
class Report:
    """What a task says about a model on a test split, beyond its metrics."""

    text: str
    figures: dict[str, Figure] = field(default_factory=dict)
    """Artifact path -> figure, e.g. ``plots/confusion_matrix.png``."""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Artifact path -> JSON document, e.g. ``evaluation/per_class.json``."""


class Task(ABC):
    """One kind of model. Subclasses set the class attributes and the abstract methods."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ("image",)
    """Names of the images that make one example, in the order the network takes them."""
    target_image: ClassVar[str | None] = None
    """The catalog column whose file is a per-pixel target (a mask), read and resized with the
    inputs and transformed with them; None: :meth:`targets` are the targets themselves."""
    epoch_metrics: ClassVar[tuple[str, ...]]
    """Metrics reported per epoch as ``train_<m>`` and ``val_<m>`` beside the loss."""
    promotion_metric: ClassVar[str]
    """Test metric that decides champion against challenger unless the config names another."""
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    figure_examples: ClassVar[int] = 0
    """Test examples :meth:`examples_figure` chooses from for the run's figure; 0: no figure."""
    live_metric: ClassVar[str | None] = None
    """A metric of :meth:`metrics` that is a mean over examples, which the service keeps from
    ground-truth feedback one example at a time; None: the task takes no feedback."""
    answer_image: ClassVar[str | None] = None
    """An answer field that is a PNG over the model's input (a mask), which the service can
    answer as a GeoTIFF on the upload's map grid; None: the answers hold no image."""
    answer_fields: ClassVar[type[BaseModel] | None] = None
    """The fields :meth:`answers` adds to ``prediction`` and ``confidence``, as a model: the
    service's typed contract declares them (None: none beyond class probabilities)."""

    # ---- configuration and data ------------------------------------------------------------

    def check_config(self, cfg: LensopsConfig) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` naming the setting when ``cfg`` cannot train this task."""

    @abstractmethod
    def targets(self, rows: pd.DataFrame, target_column: str | None) -> np.ndarray:
        """The training target of each catalog row (the mask's file with :attr:`target_image`)."""

    # ---- network ------------------------------------------------------------------------

    @abstractmethod
    def head(self, in_features: int, classes: Sequence[str]) -> nn.Module:
        """The output layer put on the backbone's features."""

    def build_network(self, cfg: ModelConfig, classes: Sequence[str], load_weights: bool = True) -> nn.Module:
        """Backbone plus :meth:`head`; a task with another shape of network overrides this."""
        return backbones.build_model(cfg, lambda features: self.head(features, classes), load_weights)

    # ---- training -----------------------------------------------------------------------

    @abstractmethod
    def loss_fn(self, cfg: TrainConfig) -> LossFn:
        """The training loss, summed over a batch."""

    @abstractmethod
    def batch_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive statistics of one batch (summed over ranks and batches), named as in
        :meth:`sum_names`."""

    def sum_names(self) -> tuple[str, ...]:
        """The keys of :meth:`batch_sums`; by default one sum per epoch metric."""
        return self.epoch_metrics

    def epoch_summary(self, sums: Mapping[str, float], count: float) -> dict[str, float]:
        """Turn an epoch's summed statistics into its :attr:`epoch_metrics`; means by default."""
        return {name: sums[name] / count for name in self.epoch_metrics}

    # ---- outputs ------------------------------------------------------------------------

    @abstractmethod
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw network output -> what answers and metrics are computed from."""

    @abstractmethod
    def answers(self, outputs: np.ndarray, classes: Sequence[str]) -> list[dict[str, Any]]:
        """One answer per example: at least ``prediction`` and ``confidence`` (None when
        the task has no confidence)."""

    @abstractmethod
    def agrees(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        """Whether two answers for the same input say the same thing (shadow traffic)."""

    def metric_label(self, answer: Mapping[str, Any]) -> str:
        """The ``label`` of an answer in the service's prediction counter."""
        return str(answer["prediction"])

    # ---- feedback (the truth about a logged prediction) ------------------------------------

    def target_of(self, truth: object, classes: Sequence[str]) -> Any:
        """The target that ``truth`` (the ``label`` or ``value`` sent as feedback) states;
        ``ValueError`` saying why when this model cannot have predicted it."""
        raise ValueError(f"{self.name} models take no feedback")

    def outputs_of(self, logged: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> np.ndarray:
        """The activated outputs of logged answers (prediction-log records), as :meth:`metrics` takes them."""
        raise NotImplementedError(f"{self.name} models take no feedback")

    def live_score(self, logged: Mapping[str, Any], target: Any, classes: Sequence[str]) -> float:
        """:attr:`live_metric` of one logged answer against its target."""
        outputs = self.outputs_of([logged], classes)
        return self.metrics(np.asarray([target]), outputs, classes)[self.live_metric or ""]

    # ---- evaluation ---------------------------------------------------------------------

    @abstractmethod
    def metrics(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
        """Test metrics of activated ``outputs`` against ``targets``."""

    @abstractmethod
    def report(self, targets: np.ndarray, outputs: np.ndarray, classes: Sequence[str]) -> Report:
        """A readable report with plots and tables for the tracking run."""

    def examples_figure(self, batch: Mapping[str, np.ndarray], outputs: np.ndarray) -> Figure | None:
        """A figure of some of the :attr:`figure_examples` test examples (uint8 inputs and
        ``target``, as the data pipeline yields them) beside the model's activated ``outputs``."""
        return None

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    def reported_metrics(self) -> set[str]:
        """What training reports every epoch, for early stopping and sweeps to follow."""
        return {f"{split}_{m}" for split in ("train", "val") for m in ("loss", *self.epoch_metrics)}
