"""How the ingress answers one image: preprocess on the CPU tier, predict on the model tier
with the version the router chose, count it, and run the shadow prediction in the background."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from lensops.model.artifact import ModelSpec
from lensops.serving.errors import ApiError
from lensops.serving.following import logger
from lensops.serving.metrics import IngressMetrics
from lensops.serving.router import Route, Router


class Answerer:
    def __init__(
        self, preprocessor: DeploymentHandle, model: DeploymentHandle, router: Router, metrics: IngressMetrics
    ):
        # By value over the replicas' own gRPC servers, not through Ray's object store: the
        # images are small and answers are never passed on as ObjectRefs. Explicit, because a
        # handle's default is fixed where it was built (the driver), not where it is used.
        self.preprocessor = preprocessor.options(_by_reference=False)
        self.model = model.options(_by_reference=False)
        self.router, self.metrics = router, metrics
        self.background: set[asyncio.Task[None]] = set()

    def model_for(self, version: str) -> DeploymentHandle:
        return self.model.options(multiplexed_model_id=version)

    async def answer(self, data: bytes, route: Route) -> dict[str, Any]:
        """The answer to one image from the version ``route`` names; ``ApiError`` if rejected."""
        started, active = time.perf_counter(), route.answer
        prepared = await self._prepare(data, active.spec)
        answer = await self.model_for(active.version).predict.remote(prepared)
        answer["model"] = {**answer["model"], "alias": active.alias}
        label = active.spec.task.metric_label(answer)
        self.metrics.answered(active.version, label, answer.get("confidence"), time.perf_counter() - started)
        if route.shadow is not None:
            self._in_background(self._shadow(route, answer, data, prepared))
        return answer

    async def _prepare(self, data: bytes, spec: ModelSpec) -> dict[str, np.ndarray]:
        prepared = await self.preprocessor.remote(data, spec.preprocess)
        if isinstance(prepared, ApiError):
            raise prepared
        return {spec.task.inputs[0]: prepared}

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)  # the loop itself keeps only a weak reference
        task.add_done_callback(self.background.discard)

    async def _shadow(self, route: Route, answer: dict[str, Any], data: bytes, prepared: dict[str, np.ndarray]) -> None:
        """Predict an answered image with the challenger: logged and counted, never returned."""
        challenger = route.shadow
        try:
            if challenger.spec.preprocess != route.answer.spec.preprocess:
                prepared = await self._prepare(data, challenger.spec)
            shadow = await self.model_for(challenger.version).predict.remote(prepared)
        except Exception as exc:  # the client has its answer already; a failing challenger is only counted
            logger.warning("shadow v%s failed: %r", challenger.version, exc)
            self.router.compare(route, answer, None)
            return
        verdict = "agree" if self.router.compare(route, answer, shadow) else "disagree"
        logger.info(
            "shadow v%s: %s, champion v%s: %s (%s)",
            challenger.version,
            shadow["prediction"],
            route.answer.version,
            answer["prediction"],
            verdict,
        )
