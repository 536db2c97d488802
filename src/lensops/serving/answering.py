"""How the ingress answers one example (an image, or the images of a task with several inputs):
preprocess each on the CPU tier, predict on the model tier with the version the router chose,
count it, and run the shadow prediction in the background.

A call to a tier whose replica died or became unavailable is tried again, on another replica,
up to ``serve.retry_attempts`` times within the request's deadline: a prediction is idempotent,
so a lost replica need not cost the client its answer. A rejected image (a 4xx) is an answer
and is never retried. A tier whose queue is full answers at once: 503 ``overloaded``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from lensops.config import ServeConfig
from lensops.model.artifact import ModelSpec
from lensops.monitoring import records
from lensops.monitoring.log_writer import PredictionLog
from lensops.serving.errors import ApiError
from lensops.serving.following import Active, logger
from lensops.serving.inputs import SINGLE_IMAGE, same_size
from lensops.serving.metrics import IngressMetrics
from lensops.serving.router import Route, Router
from lensops.serving.uploads import Prepared

T = TypeVar("T")
REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
"""What a tier call raises when its replica died or is going away: worth a try elsewhere."""
RETRY_PAUSE_S = 0.05
BUSY_RETRY_AFTER_S = 1.0
Uploads = dict[str, bytes]
"""One example's uploaded files, by the task's input names."""


class Answerer:
    def __init__(
        self,
        preprocessor: DeploymentHandle,
        model: DeploymentHandle,
        router: Router,
        metrics: IngressMetrics,
        cfg: ServeConfig,
        log: PredictionLog | None = None,
    ):
        # By value over the replicas' own gRPC servers, not through Ray's object store: the
        # images are small and answers are never passed on as ObjectRefs. Explicit, because a
        # handle's default is fixed where it was built (the driver), not where it is used.
        self.preprocessor = preprocessor.options(_by_reference=False)
        self.model = model.options(_by_reference=False)
        self.router, self.metrics, self.cfg, self.log = router, metrics, cfg, log
        self.background: set[asyncio.Task[None]] = set()

    def model_for(self, version: str) -> DeploymentHandle:
        return self.model.options(multiplexed_model_id=version)

    async def answer(self, uploads: Uploads, route: Route, log_as: str | None = None) -> dict[str, Any]:
        """The answer to one example (its uploads by task input) from the version ``route``
        names; ``ApiError`` if rejected. With ``log_as`` (a request id) the answer goes to the
        prediction log under that id, with the facts and bytes of the example's last input (the
        later date of a pair)."""
        started, active = time.perf_counter(), route.answer
        prepared, inputs, answer = await self._ask(uploads, active, lambda model, inputs: model.predict.remote(inputs))
        answer["model"] = {**answer["model"], "alias": active.alias}
        embedding = answer.pop("embedding", None)  # for the log (serve.log_embeddings), not the client
        label = active.spec.task.metric_label(answer)
        self.metrics.answered(active.version, label, answer.get("confidence"), time.perf_counter() - started)
        if log_as is not None and self.log is not None:
            last = active.spec.task.inputs[-1]
            self.log.add(records.service_record(log_as, answer, prepared[last].facts, embedding), uploads[last])
        if route.shadow is not None:
            self._in_background(self._shadow(route, answer, uploads, inputs))
        return answer

    async def explain(self, upload: bytes, route: Route, target: str | None) -> dict[str, Any]:
        """The answer to one image with its explanation (of ``target``, else the predicted class).
        Not logged: an explanation is asked about an image, it is not traffic to monitor."""
        active = route.answer
        _, _, answer = await self._ask(
            {SINGLE_IMAGE[0]: upload}, active, lambda model, inputs: model.explain.remote(inputs, target)
        )
        if isinstance(answer, ApiError):
            raise answer
        return {**answer, "model": {**answer["model"], "alias": active.alias}}

    async def _ask(
        self, uploads: Uploads, active: Active, call: Callable[[DeploymentHandle, dict[str, np.ndarray]], Awaitable[T]]
    ) -> tuple[dict[str, Prepared], dict[str, np.ndarray], T]:
        """Preprocess ``uploads`` for the ``active`` version, then ``call`` its model tier on the
        inputs, all within the request's deadline: (prepared uploads, inputs, what the tier said)."""
        try:
            async with asyncio.timeout(self.cfg.request_timeout_s):
                prepared = await self._prepare(uploads, active.spec)
                inputs = {name: upload.image for name, upload in prepared.items()}
                model = self.model_for(active.version)
                return prepared, inputs, await self._reliably(lambda: call(model, inputs), "Model")
        except TimeoutError:
            raise ApiError("timeout", f"no answer within {self.cfg.request_timeout_s:g} s") from None

    async def _prepare(self, uploads: Uploads, spec: ModelSpec) -> dict[str, Prepared]:
        """Every upload checked and decoded on the CPU tier, side by side; the images of one
        example must have one size (they picture the same place)."""
        names = list(uploads)
        prepared = await asyncio.gather(*(self._prepare_one(uploads[name], spec) for name in names))
        return dict(zip(names, same_size(names, prepared), strict=True))

    async def _prepare_one(self, data: bytes, spec: ModelSpec) -> Prepared:
        prepared = await self._reliably(lambda: self.preprocessor.remote(data, spec.preprocess), "Preprocessor")
        if isinstance(prepared, ApiError):
            raise prepared
        return prepared

    async def _reliably(self, call: Callable[[], Awaitable[T]], tier: str) -> T:
        """``call()``, tried again when its replica was lost; 503 at once when the tier is full."""
        attempt = 1
        while True:
            try:
                return await call()
            except BackPressureError:
                raise ApiError("overloaded", f"the {tier} tier's queue is full", BUSY_RETRY_AFTER_S) from None
            except REPLICA_LOST as exc:
                self.metrics.retried(tier)
                logger.warning("%s replica lost (try %d of %d): %s", tier, attempt, self.cfg.retry_attempts, exc)
                if attempt == self.cfg.retry_attempts:
                    raise ApiError("replica_unavailable", f"no {tier} replica answered", BUSY_RETRY_AFTER_S) from exc
                await asyncio.sleep(RETRY_PAUSE_S * attempt)
                attempt += 1

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)  # the loop itself keeps only a weak reference
        task.add_done_callback(self.background.discard)

    async def _shadow(
        self, route: Route, answer: dict[str, Any], uploads: Uploads, inputs: dict[str, np.ndarray]
    ) -> None:
        """Predict an answered example with the challenger: logged and counted, never returned."""
        challenger = route.shadow
        try:
            if challenger.spec.preprocess != route.answer.spec.preprocess:
                prepared = await self._prepare(uploads, challenger.spec)
                inputs = {name: upload.image for name, upload in prepared.items()}
            shadow = await self.model_for(challenger.version).predict.remote(inputs)
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


def require_one_image(spec: ModelSpec, what: str) -> None:
    """400 ``unsupported_for_model`` when the served task takes more than one image."""
    if spec.task.inputs != SINGLE_IMAGE:
        inputs = " and ".join(spec.task.inputs)
        detail = f"{what} take one image; this {spec.model.task} model takes {inputs}: send them to /predict"
        raise ApiError("unsupported_for_model", detail)
