"""The model artifact: weights as safetensors plus a JSON spec that explains them.

``spec.json`` carries everything needed to rebuild the network and its preprocessing
(architecture, task, class names, input size, normalisation), where the data came from
(dataset version, source), how it was trained (resolved config, git commit), how well it
did (metrics), and per-channel statistics of the training images for later drift checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from lensops.config import ModelConfig
from lensops.model.preprocess import PreprocessSpec
from lensops.model.tasks import Task, get_task

WEIGHTS = "model.safetensors"
SPEC = "spec.json"


class ChannelStats(BaseModel):
    """Per-channel mean and std of training images, in 0..1 intensity units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixels: int


class ModelSpec(BaseModel):
    model: ModelConfig
    classes: list[str]
    target_column: str | None = None
    preprocess: PreprocessSpec
    dataset_version: str
    data_source: str
    data_licence: str = "not stated"
    config: dict[str, Any]
    git_commit: str
    metrics: dict[str, float] = {}
    baseline: ChannelStats | None = None

    @property
    def task(self) -> Task:
        return get_task(self.model.task)

    def build_network(self, load_weights: bool = True) -> nn.Module:
        """The task's network for this spec; ``load_weights=False`` when trained weights follow."""
        return self.task.build_network(self.model, self.classes, load_weights)


def save(directory: str | Path, model: nn.Module, spec: ModelSpec) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / WEIGHTS)
    (out / SPEC).write_text(spec.model_dump_json(indent=2))
    return out


def load_spec(directory: str | Path) -> ModelSpec:
    return ModelSpec.model_validate(json.loads((Path(directory) / SPEC).read_text()))


def load(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the network from its spec and load its weights, in eval mode."""
    spec = load_spec(directory)
    model = spec.build_network(load_weights=False)
    model.load_state_dict(load_file(Path(directory) / WEIGHTS, device=str(device)))
    return model.to(device).eval(), spec
