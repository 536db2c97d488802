"""What every Ray Train worker runs: one data-parallel fine-tuning loop.

Each epoch: train on this worker's shard, validate on its val shard, all-reduce the sums so
every rank sees global metrics, save a checkpoint (model, optimizer, scheduler, epoch,
early-stopping state, spec) and report it. After a worker failure Ray Train restarts the
group and the loop resumes from the latest checkpoint. Workers never talk to MLflow: the
controller logs what it registered (:class:`lensops.tracking.EpochLogger`).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn

from lensops import artifact
from lensops.artifact import ModelSpec
from lensops.config import TrainConfig
from lensops.models import build_model, parameter_groups, unwrap
from lensops.preprocess import normalization

STATE = "train_state.pt"


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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    spec = ModelSpec.model_validate(config["spec"])
    cfg = TrainConfig.model_validate(spec.config["train"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"

    model = build_model(spec.model, spec.outputs)
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = _optimizer(model, spec, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg))
    stopper = EarlyStopping(cfg.early_stopping_metric, cfg.early_stopping_mode, cfg.early_stopping_patience)
    checkpoint = ray.train.get_checkpoint()
    start_epoch = _restore(checkpoint, model, optimizer, scheduler, stopper) if checkpoint else 0

    step = _Step(model, spec, cfg, device, on_gpu and cfg.amp)
    rank = ray.train.get_context().get_world_rank()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg.epochs):
        drill = cfg.fail_at_epoch == epoch and rank == 0 and checkpoint is None
        metrics = {**step.run(train_shard, optimizer, fail_midway=drill), **step.run(val_shard, None)}
        metrics |= {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        scheduler.step()
        stop = stopper.update(metrics)
        _report(metrics, model, optimizer, scheduler, stopper, spec, epoch, rank)
        if stop:
            break


class _Step:
    """Runs one pass over a shard: training when given an optimizer, evaluation otherwise."""

    def __init__(self, model: nn.Module, spec: ModelSpec, cfg: TrainConfig, device: torch.device, amp: bool):
        self.model, self.cfg, self.device, self.amp = model, cfg, device, amp
        self.regression = spec.task == "regression"
        self.normalize = normalization(spec.preprocess)
        self.loss_fn = (
            nn.SmoothL1Loss(reduction="sum")
            if self.regression
            else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")
        )
        self.scaler = torch.amp.GradScaler(enabled=amp)

    def run(
        self, shard: ray.data.DataIterator, optimizer: torch.optim.Optimizer | None, fail_midway: bool = False
    ) -> dict[str, float]:
        training = optimizer is not None
        self.model.train(training)
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, score, count, secs
        started = time.perf_counter()
        batches = shard.iter_torch_batches(
            batch_size=self.cfg.batch_size,
            device=self.device,
            local_shuffle_buffer_size=8 * self.cfg.batch_size if training else None,
        )
        with torch.set_grad_enabled(training):
            for index, batch in enumerate(batches):
                if fail_midway and index == 2:
                    _die(f"injected failure: rank 0 exits mid-epoch (batch {index})")
                totals[:3] += self._batch(batch, optimizer)
        totals[3] = time.perf_counter() - started
        return self._summarise(totals, "train" if training else "val")

    def _batch(self, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None) -> torch.Tensor:
        images = self.normalize(batch["image"])
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["target"].float() if self.regression else batch["target"].long()
        with torch.autocast(self.device.type, enabled=self.amp):
            output = self.model(images)
            output = output.squeeze(1) if self.regression else output
            loss = self.loss_fn(output.float(), target)
        if optimizer is not None:
            self._update(loss / len(target), optimizer)
        score = (output - target).abs().sum() if self.regression else (output.argmax(1) == target).sum()
        count = torch.tensor(len(target), dtype=torch.float64, device=loss.device)
        return torch.stack([loss.detach().double(), score.detach().double(), count])

    def _update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip_norm:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.scaler.step(optimizer)
        self.scaler.update()

    def _summarise(self, totals: torch.Tensor, prefix: str) -> dict[str, float]:
        if dist.is_available() and dist.is_initialized():
            sums, secs = totals[:3].clone(), totals[3:].clone()
            dist.all_reduce(sums)
            dist.all_reduce(secs, op=dist.ReduceOp.MAX)
            totals = torch.cat([sums, secs])
        loss, score, count, secs = totals.tolist()
        count = max(count, 1.0)
        metrics = {f"{prefix}_loss": loss / count, f"{prefix}_images_per_s": count / max(secs, 1e-9)}
        metrics[f"{prefix}_{'mae' if self.regression else 'accuracy'}"] = score / count
        return metrics


def _optimizer(model: nn.Module, spec: ModelSpec, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.lr, spec.model.backbone_lr_scale)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(cfg: TrainConfig):
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


def _die(reason: str) -> None:
    """Fault drill (``train.fail_at_epoch``): the worker process dies as a crashed one would,
    in an attempt that started from scratch, so the restarted group resumes from a checkpoint."""
    print(f"[lensops] {reason}", flush=True)
    os._exit(1)


def _report(metrics, model, optimizer, scheduler, stopper, spec, epoch, rank) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            artifact.save(tmp, unwrap(model), spec)
            torch.save(
                {
                    "epoch": epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "early_stopping": {"best": stopper.best, "stale_epochs": stopper.stale_epochs},
                },
                Path(tmp) / STATE,
            )
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _restore(checkpoint, model, optimizer, scheduler, stopper) -> int:
    with checkpoint.as_directory() as directory:
        unwrap(model).load_state_dict(load_file(Path(directory) / artifact.WEIGHTS))
        state = torch.load(Path(directory) / STATE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    stopper.best = state["early_stopping"]["best"]
    stopper.stale_epochs = state["early_stopping"]["stale_epochs"]
    print(f"[lensops] resumed from the checkpoint of epoch {state['epoch']}", flush=True)
    return state["epoch"] + 1
