"""What the change-detection test modules share: a brief training's config and a served champion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from conftest import REPO
from ray import serve

from lensops.config import LensopsConfig, load_config
from lensops.runtime import free_port
from lensops.serving.app import run_local
from lensops.tracking import registry
from lensops.training.fit import TrainOutcome


def brief_config(config: str, source: Path, work: Path, mlflow_uri: str, name: str, *more: str) -> LensopsConfig:
    """``configs/<config>`` on ``source`` for one epoch, whole scenes split 2:1:1, tracked as ``name``."""
    overrides = [
        f"data.source={source}",
        f"data.work_dir={work}",
        f"tracking.tracking_uri={mlflow_uri}",
        f"tracking.experiment={name}",
        f"tracking.registered_model={name}",
        "data.split={train: 0.5, val: 0.25, test: 0.25}",  # whole scenes: a few per split
        "train.epochs=1",
        "train.warmup_epochs=0",
        "serve.max_replicas=1",
        "serve.ingress_max_replicas=1",
        *more,
    ]
    return load_config(REPO / "configs" / config, overrides)


def serve_champion(cfg: LensopsConfig, run: TrainOutcome, mlflow_uri: str) -> Iterator[str]:
    """``run``'s version as the champion, served on the session's Ray until the module ends."""
    registry.set_alias(mlflow_uri, run.model_name, registry.CHAMPION, run.version)
    yield run_local(cfg, port=free_port())
    serve.shutdown()
