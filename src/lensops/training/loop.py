"""What every Ray Train worker runs: one data-parallel fine-tuning loop.

Each epoch: train on this worker's shard, validate on its val shard (:class:`EpochRunner`
sums over ranks, so every rank sees global metrics), save a checkpoint (model, optimiser,
scheduler, epoch, early-stopping state, spec) and report it. After a worker failure Ray Train
restarts the group and the loop resumes from the latest checkpoint. Workers never talk to
MLflow: the controller logs what it registered (:class:`lensops.tracking.epochs.EpochLogger`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from safetensors.torch import load_file
from torch import nn

from lensops.config import TrainConfig
from lensops.model import artifact
from lensops.model.artifact import ModelSpec
from lensops.model.backbones import unwrap
from lensops.training.epoch import EarlyStopping, EpochRunner, lr_factor, make_optimizer

STATE = "train_state.pt"
DRILL_BATCH = 2
"""The fault drill (``train.fail_at_epoch``) kills rank 0 before this batch of its epoch."""


def train_loop(config: dict[str, Any]) -> None:
    spec = ModelSpec.model_validate(config["spec"])
    cfg = TrainConfig.model_validate(spec.config["train"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()

    model = spec.build_network()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, spec, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    stopper = EarlyStopping(cfg.early_stopping_metric, cfg.early_stopping_mode, cfg.early_stopping_patience)
    checkpoint = ray.train.get_checkpoint()
    start_epoch = _restore(checkpoint, model, optimizer, scheduler, stopper) if checkpoint else 0

    runner = EpochRunner(model, spec, cfg, amp=cfg.amp)
    rank = ray.train.get_context().get_world_rank()
    for epoch in range(start_epoch, cfg.epochs):
        drill = cfg.fail_at_epoch == epoch and rank == 0 and checkpoint is None
        train_metrics = runner.run(_batches("train", cfg, training=True), optimizer, _drill if drill else None)
        metrics = {**train_metrics, **runner.run(_batches("val", cfg, training=False), None)}
        metrics |= {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        scheduler.step()
        stop = stopper.update(metrics)
        _report(metrics, model, optimizer, scheduler, stopper, spec, epoch, rank)
        if stop:
            break


def _batches(split: str, cfg: TrainConfig, training: bool):
    """This worker's shard of ``split`` as torch batches (still on the CPU: the forward path
    moves them to the device)."""
    return ray.train.get_dataset_shard(split).iter_torch_batches(
        batch_size=cfg.batch_size, local_shuffle_buffer_size=8 * cfg.batch_size if training else None
    )


def _drill(index: int) -> None:
    """Fault drill: the worker process dies as a crashed one would, in an attempt that started
    from scratch, so the restarted group resumes from a checkpoint."""
    if index == DRILL_BATCH:
        print(f"[lensops] injected failure: rank 0 exits mid-epoch (batch {index})", flush=True)
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


def _restore(checkpoint: ray.train.Checkpoint, model: nn.Module, optimizer, scheduler, stopper: EarlyStopping) -> int:
    with checkpoint.as_directory() as directory:
        unwrap(model).load_state_dict(load_file(Path(directory) / artifact.WEIGHTS))
        state = torch.load(Path(directory) / STATE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    stopper.best = state["early_stopping"]["best"]
    stopper.stale_epochs = state["early_stopping"]["stale_epochs"]
    print(f"[lensops] resumed from the checkpoint of epoch {state['epoch']}", flush=True)
    return state["epoch"] + 1
