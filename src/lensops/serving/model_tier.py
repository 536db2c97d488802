"""The model tier behind the ingress and the preprocessor (:mod:`lensops.serving.preprocessor`).

``Model`` holds registered versions with ``@serve.multiplexed`` (the version number is the model
id) and answers with ``@serve.batch``; a batch never mixes versions. Explanations (Grad-CAM, a
backward pass) are answered one image at a time, outside the batches.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from lensops.config import Runtime
from lensops.model.explain import described, grad_cam, target_index
from lensops.model.forward import Predictor
from lensops.serving.errors import ApiError
from lensops.serving.metrics import ModelMetrics
from lensops.tracking.registry import load_predictor

MODELS_PER_REPLICA = 3
"""Versions one model replica keeps loaded: champion, challenger and the one being swapped in."""


def _device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


@serve.deployment
class Model:
    """Model tier: registered versions loaded on demand, requests answered in batches."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        device: str,
        max_batch_size: int,
        batch_wait_s: float,
        embed: bool = False,
        runtime: Runtime = "torch",
    ):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.device = _device(device)
        self.runtime = runtime
        self.embed = embed  # answers also carry their embedding, for the prediction log
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_s)
        self.metrics = ModelMetrics()

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def predictor(self, version: str) -> Predictor:
        loaded = await asyncio.to_thread(
            load_predictor, self.tracking_uri, self.model_name, version, self.device, self.runtime
        )
        self.metrics.loaded(loaded.info.version)
        return loaded

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict(self, examples: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """One answer per example (its uint8 images by task input name), with the model block."""
        predictor = await self.predictor(serve.get_multiplexed_model_id())
        batch = {name: np.stack([example[name] for example in examples]) for name in examples[0]}
        started = time.perf_counter()
        answers = await asyncio.to_thread(predictor.predict, batch, self.embed)
        self.metrics.batch(predictor.info.version, len(examples), time.perf_counter() - started)
        return [{**a, "model": predictor.info.as_dict()} for a in answers]

    async def explain(self, inputs: dict[str, np.ndarray], target: str | None) -> dict[str, Any] | ApiError:
        """One image's answer with its Grad-CAM of ``target`` (None: the predicted class);
        an unknown target is returned as an ``ApiError``, as the preprocessor returns a bad image."""
        predictor = await self.predictor(serve.get_multiplexed_model_id())
        try:
            index = target_index(predictor.spec, target)
        except ValueError as exc:
            return ApiError("unknown_label", str(exc))
        batch = {name: image[None] for name, image in inputs.items()}
        (answer,) = await asyncio.to_thread(predictor.predict, batch)
        (explanation,) = await asyncio.to_thread(grad_cam, predictor.forward, batch, [index])
        shown = described(explanation, inputs[predictor.spec.task.inputs[0]], predictor.spec)
        return {**answer, "model": predictor.info.as_dict(), "explanation": shown}

    async def describe(self) -> dict[str, Any]:
        predictor = await self.predictor(serve.get_multiplexed_model_id())
        return {"model": predictor.info.as_dict(), "spec": predictor.spec.model_dump(mode="json")}
