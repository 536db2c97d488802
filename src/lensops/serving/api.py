"""The HTTP layer: FastAPI routes on the ingress deployment, thin over the router and the tiers.

Requests are parsed by :mod:`lensops.serving.inputs`, the version that answers is chosen by
:class:`lensops.serving.router.Router`, images go to the ``Preprocessor`` and ``Model`` tiers,
and every failure becomes the one error body of :mod:`lensops.serving.errors`.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures of the
# class-based ingress at import time and needs real types (e.g. `request: Request`).
import asyncio
import hmac
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from lensops.config import LensopsConfig
from lensops.model.artifact import ModelSpec
from lensops.serving.answering import Answerer
from lensops.serving.errors import ApiError
from lensops.serving.inputs import InputLimits, read_images
from lensops.serving.metrics import IngressMetrics
from lensops.serving.router import Router
from lensops.serving.versions import RegistryVersions
from lensops.tracking import runs

api = FastAPI(
    title="lensops",
    description="Image model inference: the registered champion behind Ray Serve.",
    version="1",
)
UPLOAD_PAGE = Path(__file__).with_name("upload.html")
HEALTH_TIMEOUT_S = 30


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: parse, route, call the tiers, answer."""

    def __init__(self, preprocessor: DeploymentHandle, model: DeploymentHandle, config: dict[str, Any]):
        self.cfg = LensopsConfig.model_validate(config)
        self.limits = InputLimits.from_config(self.cfg.serve)
        self.metrics = IngressMetrics()
        name = self.cfg.tracking.registered_model
        versions = RegistryVersions(runs.resolve_uri(self.cfg.tracking), name, model)
        self.router = Router(self.cfg.serve, name, versions, self.metrics)
        self.answerer = Answerer(preprocessor, model, self.router, self.metrics)
        self.watcher = asyncio.get_running_loop().create_task(self.router.watch())

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(UPLOAD_PAGE.read_text())

    @api.post("/predict", summary="Predict one image (multipart field `file` or JSON {'image': base64})")
    async def predict(self, request: Request) -> JSONResponse:
        try:
            route = self.router.route()
            (data,) = await read_images(request, self.limits, many=False)
            return JSONResponse(await self.answerer.answer(data, route))
        except ApiError as exc:
            return self._reject(exc)

    @api.post("/predict_batch", summary="Predict several images (multipart `files` or JSON {'images': [...]})")
    async def predict_batch(self, request: Request) -> JSONResponse:
        try:
            self.router.route()  # 503 before reading a body that no model could answer
            images = await read_images(request, self.limits, many=True)
        except ApiError as exc:
            return self._reject(exc)
        answers = (self.answerer.answer(data, self.router.route()) for data in images)
        results = await asyncio.gather(*answers, return_exceptions=True)
        return JSONResponse({"results": [self._item(r) for r in results]})

    @api.get("/health")
    async def health(self) -> JSONResponse:
        health = self.router.health()
        if health.version is not None:
            try:
                await asyncio.wait_for(self.answerer.model_for(health.version).describe.remote(), HEALTH_TIMEOUT_S)
            except Exception as exc:  # any failure to answer means not ready
                return JSONResponse({"status": "unavailable", "reason": f"model replica: {exc}"}, status_code=503)
        return JSONResponse(health.as_dict(), status_code=503 if health.status == "unavailable" else 200)

    @api.get("/classes")
    async def classes(self) -> JSONResponse:
        try:
            spec = self.router.route().answer.spec
        except ApiError as exc:
            return self._reject(exc)
        return JSONResponse({"task": spec.model.task, "classes": spec.classes})

    @api.get("/model")
    async def model_info(self) -> JSONResponse:
        champion = self.router.champion
        if champion is None:
            return self._reject(ApiError("model_unavailable", self.router.health().reason or ""))
        spec: ModelSpec = champion.spec
        identity = {"name": self.router.name, "version": champion.version, "alias": champion.alias}
        return JSONResponse(
            identity
            | {"dataset_version": spec.dataset_version, "run_id": champion.run_id, "metrics": spec.metrics}
            | {"spec": spec.model_dump(mode="json"), "challenger": self.router.challenger_info()}
        )

    @api.post("/reload-model", summary="Swap to the version the alias points to now (bearer token)")
    async def reload_model(self, request: Request) -> JSONResponse:
        expected = os.environ.get(self.cfg.serve.reload_token_env, "")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        old = self.router.champion.version if self.router.champion else None
        try:
            if not expected:
                raise ApiError("reload_disabled", f"set {self.cfg.serve.reload_token_env} to enable reloads")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise ApiError("unauthorized", "missing or wrong bearer token")
            new = await self.router.refresh()
        except ApiError as exc:
            return _error(exc)
        return JSONResponse({"old_version": old, "new_version": new, "alias": self.cfg.serve.alias})

    def _item(self, result: dict[str, Any] | BaseException) -> dict[str, Any]:
        if isinstance(result, ApiError):
            self.metrics.rejected(result.code)
            return result.body()
        if isinstance(result, BaseException):
            raise result
        return result

    def _reject(self, exc: ApiError) -> JSONResponse:
        self.metrics.rejected(exc.code)
        return _error(exc)
