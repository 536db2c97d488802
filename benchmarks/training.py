"""Training throughput: the lensops Ray Train loop vs a plain single-process PyTorch loop, in one run.

Both fit the same model (``--arch``, pretrained backbone weights + fresh head) on the same
decoded uint8 train split of a generated image folder, with the same augmentation, optimizer
(lensops' AdamW and parameter groups from the config defaults) and effective batch.

* lensops: :func:`lensops.training.fit.prepare` (catalog, cached Ray datasets) and
  :func:`lensops.training.fit.run_trainer` (``TorchTrainer`` + ``train_loop_per_worker``) on
  ``--workers`` CPU workers of ``--batch-size`` each; per epoch it reports
  ``train_images_per_s`` (read back from the MLflow run).
* plain: one process, ``--threads`` torch threads, batches of ``--batch-size x --workers``
  drawn from the same uint8 arrays held in memory, the same per-image augmentation.

A round is one fit of each side, ``--epochs`` epochs from the same initial weights; the sides take
turns over ``--rounds`` rounds (the order reverses every other round), and Ray stays up, idle,
while the plain loop runs. In a fit the first epoch is a warm-up; a round's figure averages the
epochs after it, and the table gives the medians over rounds. "end to end" divides the train
images by the whole epoch (train + validation pass; for lensops also the checkpoint and report
to the Train controller).

    .venv/bin/python benchmarks/training.py --count 700 --epochs 3 --rounds 3 --json training.json
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import numpy as np
import ray
import torch
from torch import nn

from lensops.config import LensopsConfig, load_config
from lensops.data import samples
from lensops.model.artifact import ModelSpec
from lensops.model.preprocess import augmentation, normalizer
from lensops.tracking import runs
from lensops.training.epoch import make_optimizer
from lensops.training.fit import Prepared, open_run, prepare, run_trainer

from _common import (
    add_model_flags,
    check_device,
    console,
    in_rounds,
    parser,
    print_table,
    round_columns,
    round_comparison,
    set_torch_threads,
    start_ray,
    stopwatch,
    workspace,
    write_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    add_model_flags(parsed)
    parsed.add_argument("--count", type=int, default=700, help="generated images per class (2 classes)")
    parsed.add_argument("--size", type=int, default=160, help="side of the generated PNGs (px)")
    parsed.add_argument("--epochs", type=int, default=3, help="epochs per side, the first one a warm-up")
    parsed.add_argument("--batch-size", type=int, default=32, help="per-worker batch (train.batch_size)")
    parsed.add_argument("--workers", type=int, default=2, help="Ray Train workers (train.num_workers)")
    parsed.add_argument("--rounds", type=int, default=3, help="rounds of one fit per side")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.arch, args.weights, args.image_size = "resnet18", "none", 32
        args.count, args.size, args.epochs, args.batch_size, args.rounds = 30, 48, 2, 8, 1
        args.workers = 1  # one worker process fewer to start: the smoke run checks the script, not scaling
    return args


def lensops_config(args: argparse.Namespace, work: Any) -> LensopsConfig:
    overrides = {
        "data.source": work / "images",
        "data.work_dir": work / "lensops",
        "tracking.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "tracking.experiment": "benchmark-training",
        "model.architecture": args.arch,
        "model.weights": args.weights,
        "preprocess.image_size": args.image_size,
        "train.num_workers": args.workers,
        "train.use_gpu": args.device == "cuda",
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.max_failures": 0,
    }
    return load_config(None, [f"{key}={value}" for key, value in overrides.items()])


# ---- lensops: Ray Train ---------------------------------------------------------------------


def lensops_fit(cfg: LensopsConfig, prepared: Prepared) -> dict[str, Any]:
    run_id = open_run(cfg, prepared, name="benchmark")
    with runs.closing(prepared.uri, run_id), stopwatch() as elapsed:
        run_trainer(cfg, prepared, run_id)
        fit_s = elapsed()
    client = runs.client(prepared.uri)
    rates = [m.value for m in sorted(client.get_metric_history(run_id, "train_images_per_s"), key=lambda m: m.step)]
    stamps = [m.timestamp for m in sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]
    train_images = prepared.catalog.split("train").shape[0]
    epoch_s = [(b - a) / 1000 for a, b in itertools.pairwise(stamps)]
    return summary(rates[1:], [train_images / s for s in epoch_s], rates[0], fit_s)


def summary(rates: list[float], end_to_end: list[float], warmup: float, total_s: float) -> dict[str, Any]:
    return {
        "train_img_per_s": statistics.mean(rates),
        "end_to_end_img_per_s": statistics.mean(end_to_end),
        "warmup_train_img_per_s": warmup,
        "epochs_train_img_per_s": rates,
        "total_s": total_s,
    }


# ---- baseline: a plain PyTorch loop ---------------------------------------------------------


Split = tuple[torch.Tensor, torch.Tensor]
"""Images (uint8) and targets of one split, in memory."""


def in_memory(dataset: ray.data.Dataset) -> Split:
    """The decoded uint8 images and targets of a (cached) lensops dataset, as tensors."""
    batches = list(dataset.iter_batches(batch_size=1024, batch_format="numpy"))
    images = np.concatenate([b["image"] for b in batches])
    targets = np.concatenate([b["target"] for b in batches])
    return torch.from_numpy(images), torch.from_numpy(targets)


class PlainLoop:
    """What a hand-written single-process loop does with the same model, data and optimizer."""

    def __init__(self, cfg: LensopsConfig, spec: ModelSpec, device: str):
        torch.manual_seed(cfg.train.seed)
        self.device = torch.device(device)
        self.amp = self.device.type == "cuda" and cfg.train.amp
        self.model = spec.build_network().to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, spec, cfg.train)
        self.scaler = torch.amp.GradScaler(enabled=self.amp)
        self.augment = augmentation(cfg.preprocess.augment)
        self.normalize = normalizer(spec.preprocess)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
        self.batch_size = cfg.train.batch_size * cfg.train.num_workers

    def epoch(self, train: Split, val: Split) -> tuple:
        """(train images/s, end-to-end images/s) of one training pass plus one validation pass."""
        started = time.perf_counter()
        self.model.train()
        images, targets = train
        for index in torch.randperm(len(images)).split(self.batch_size):
            batch = torch.stack([self.augment(image) for image in images[index]])
            self.step(self.inputs(batch), targets[index].to(self.device))
        train_s = time.perf_counter() - started
        self.validate(*val)
        return len(images) / train_s, len(images) / (time.perf_counter() - started)

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        inputs = self.normalize(batch.to(self.device))
        return inputs.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else inputs

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss_fn(self.model(inputs).float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @torch.no_grad()
    def validate(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.model.eval()
        for index in torch.arange(len(images)).split(self.batch_size):
            with torch.autocast(self.device.type, enabled=self.amp):
                self.model(self.inputs(images[index]))


def plain_fit(cfg: LensopsConfig, spec: ModelSpec, train: Split, val: Split, device: str) -> dict[str, Any]:
    loop = PlainLoop(cfg, spec, device)
    with stopwatch() as elapsed:
        epochs = [loop.epoch(train, val) for _ in range(cfg.train.epochs)]
        total_s = elapsed()
    return summary([e[0] for e in epochs[1:]], [e[1] for e in epochs[1:]], epochs[0][0], total_s)


# ---- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    set_torch_threads(args.threads)
    with workspace() as work:
        count = samples.write_synthetic(work / "images", count_per_class=args.count, size=args.size)
        cfg = lensops_config(args, work)
        start_ray()
        prepared = prepare(cfg)
        train_images = prepared.catalog.split("train").shape[0]
        console.print(f"{count} images, {train_images} in the train split")
        train, val = in_memory(prepared.datasets["train"]), in_memory(prepared.datasets["val"])
        sides = {
            "lensops": lambda: lensops_fit(cfg, prepared),
            "plain": lambda: plain_fit(cfg, prepared.spec, train, val, args.device),
        }
        measured = in_rounds(sides, args.rounds)
        for row in measured:
            console.print(f"round {row['round']}: " + ", ".join(f"{n} {row[n]['train_img_per_s']:.1f}" for n in sides))
        ray.shutdown()
    metrics = [
        ("train img/s (train pass)", "train_img_per_s"),
        ("end to end img/s (whole epoch)", "end_to_end_img_per_s"),
        ("warm-up epoch train img/s", "warmup_train_img_per_s"),
    ]
    table = round_comparison(measured, "lensops", "plain", metrics)
    title = (
        f"training: {args.arch} at {args.image_size} px, {train_images} train images, "
        f"{args.workers} Ray Train workers x batch {args.batch_size} vs 1 process x batch "
        f"{args.batch_size * args.workers}, {args.device}"
    )
    columns = round_columns(f"lensops (Ray Train, {args.workers} workers)", "plain PyTorch loop")
    print_table(title, columns, table, note=f"a round: mean of epochs 2..{args.epochs} of one fit")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    write_json(args.json, "training", args.device, settings, {"rows": table, "rounds": measured})


if __name__ == "__main__":
    main()
