"""One pass over a shard, and the rules around it: optimiser, learning-rate schedule, early stop.

Nothing here knows about Ray: :class:`EpochRunner` takes any iterable of batches, so the same
code runs inside Ray Train workers and in a plain test. Metrics are summed per batch and, when
``torch.distributed`` is initialised (Ray Train's DDP group), summed over ranks, so every rank
reports the same global values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lensops.config import TrainConfig
from lensops.model.artifact import ModelSpec
from lensops.model.backbones import parameter_groups, train_mode
from lensops.model.forward import Batch, Forward


@dataclass
class EarlyStopping:
    metric: str
    mode: str
    patience: int | None
    best: float | None = None
    stale_epochs: int = 0

    def update(self, metrics: dict[str, float]) -> bool:
        """Record an epoch; True when training should stop."""
        value = metrics[self.metric]
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        self.best, self.stale_epochs = (value, 0) if better else (self.best, self.stale_epochs + 1)
        return self.patience is not None and self.stale_epochs >= self.patience


def make_optimizer(model: nn.Module, spec: ModelSpec, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser over the trainable parameters: the head at ``train.lr``, the
    backbone at ``train.lr * model.backbone_lr_scale``."""
    groups = parameter_groups(model, cfg.lr, spec.model.backbone_lr_scale)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """Per-epoch learning-rate multiplier: linear warm-up, then cosine, step or constant."""

    def factor(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        done = epoch - cfg.warmup_epochs
        if cfg.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * done / max(cfg.epochs - cfg.warmup_epochs, 1)))
        if cfg.scheduler == "step":
            return cfg.step_gamma ** (done // cfg.step_size)
        return 1.0

    return factor


class EpochRunner:
    """Runs one pass over a shard: training when given an optimiser, evaluation otherwise."""

    def __init__(self, model: nn.Module, spec: ModelSpec, cfg: TrainConfig, amp: bool = False):
        self.model, self.cfg = model, cfg
        self.task = spec.task
        self.forward = Forward(model, spec, amp=amp)
        self.loss_fn = self.task.loss_fn(cfg)
        self.scaler = torch.amp.GradScaler(enabled=self.forward.amp)

    def run(
        self,
        batches: Iterable[Batch],
        optimizer: torch.optim.Optimizer | None,
        on_batch: Callable[[int], None] | None = None,
    ) -> dict[str, float]:
        """Metrics of one pass, prefixed ``train_`` or ``val_``; ``on_batch(index)`` runs
        before each batch (the fault drill hooks in there)."""
        training = optimizer is not None
        train_mode(self.model, training)
        sums: dict[str, torch.Tensor] = {}
        started = time.perf_counter()
        with torch.set_grad_enabled(training):
            for index, batch in enumerate(batches):
                if on_batch:
                    on_batch(index)
                for name, value in self._batch(batch, optimizer).items():
                    sums[name] = sums.get(name, 0) + value.detach().double()
        return self._summarise(sums, time.perf_counter() - started, "train" if training else "val")

    def _batch(self, batch: Batch, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
        targets = torch.as_tensor(batch["target"]).to(self.forward.device)
        logits = self.forward.logits(batch)
        loss = self.loss_fn(logits, targets)
        if optimizer is not None:
            self._update(loss / len(targets), optimizer)
        count = torch.tensor(float(len(targets)), device=loss.device)
        return {"loss": loss, "count": count, **self.task.batch_sums(logits.detach(), targets)}

    def _update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip_norm:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def _summarise(self, sums: dict[str, torch.Tensor], seconds: float, prefix: str) -> dict[str, float]:
        names = ["loss", "count", *self.task.sum_names()]  # the same order on every rank
        totals = torch.stack([torch.as_tensor(sums.get(n, 0.0), dtype=torch.float64) for n in names])
        elapsed = torch.tensor([seconds], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            totals, elapsed = totals.to(self.forward.device), elapsed.to(self.forward.device)
            dist.all_reduce(totals)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        summed = dict(zip(names, totals.tolist(), strict=True))
        count = max(summed["count"], 1.0)
        metrics = {"loss": summed["loss"] / count, **self.task.epoch_summary(summed, count)}
        metrics["images_per_s"] = count / max(float(elapsed[0]), 1e-9)
        return {f"{prefix}_{name}": value for name, value in metrics.items()}
