"""A loaded model version that turns a batch of uint8 images into answers.

Normalisation runs here, on the model's device, so the preprocessing tier only ships uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lensops import registry
from lensops.artifact import ModelSpec
from lensops.preprocess import normalization


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    run_id: str
    dataset_version: str

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "dataset_version": self.dataset_version,
        }


class Predictor:
    def __init__(self, model: torch.nn.Module, spec: ModelSpec, info: ModelInfo):
        self.model = model.eval()
        self.spec = spec
        self.info = info
        self.device = next(model.parameters()).device
        self.normalize = normalization(spec.preprocess)

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> list[dict[str, Any]]:
        """``images``: uint8 (N, 3, H, W) -> one answer per image, in order."""
        batch = self.normalize(torch.from_numpy(images).to(self.device))
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        outputs = self.model(batch).float().cpu()
        if self.spec.task == "regression":
            return [{"prediction": float(v), "confidence": None} for v in outputs[:, 0]]
        probabilities = outputs.softmax(1).numpy()
        return [self._classification(row) for row in probabilities]

    def _classification(self, row: np.ndarray) -> dict[str, Any]:
        best = int(row.argmax())
        return {
            "prediction": self.spec.classes[best],
            "confidence": float(row[best]),
            "probabilities": {c: float(p) for c, p in zip(self.spec.classes, row, strict=True)},
        }


def load_predictor(uri: str, name: str, version: str, device: str = "cpu") -> Predictor:
    loaded = registry.load(uri, name, version, device)
    if device.startswith("cuda"):
        loaded.model.to(memory_format=torch.channels_last)
    info = ModelInfo(
        name=name,
        version=loaded.version.version,
        run_id=loaded.version.run_id,
        dataset_version=loaded.spec.dataset_version,
    )
    return Predictor(loaded.model, loaded.spec, info)
