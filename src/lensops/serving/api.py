"""The HTTP layer: FastAPI routes on the ingress deployment, thin over the router and the tiers.

Requests are parsed by :mod:`lensops.serving.inputs`, let in by :mod:`lensops.serving.access`
(API keys, rate limit, CORS), routed by :class:`lensops.serving.router.Router`, answered by the
tiers through :class:`lensops.serving.answering.Answerer`, and every failure becomes the one
error body of :mod:`lensops.serving.errors`. :mod:`lensops.serving.contract` declares it all
in the OpenAPI schema.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures of the
# class-based ingress at import time and needs real types (e.g. `request: Request`).
import asyncio
import random
from pathlib import Path
from typing import Annotated, Any

from fastapi import Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from ray import serve
from ray.serve.handle import DeploymentHandle

from lensops.config import LensopsConfig, ServeConfig
from lensops.monitoring.log_writer import LogSettings, PredictionLog
from lensops.serving import contract
from lensops.serving.access import Access, check_reload_token, load_api_keys
from lensops.serving.answering import Answerer, require_one_image
from lensops.serving.errors import ApiError
from lensops.serving.feedback import FeedbackDesk
from lensops.serving.geotiff import answer_geotiff, require_image_answer
from lensops.serving.inputs import SINGLE_IMAGE, read_example, read_feedback, read_images
from lensops.serving.metrics import IngressMetrics
from lensops.serving.router import Router
from lensops.serving.uploads import InputLimits
from lensops.serving.versions import RegistryVersions
from lensops.tracking import runs

# /docs (Swagger UI 5) served from the package's own copy of its scripts: no CDN, so it works offline.
api = FastAPIOffline(
    title="lensops",
    description="Image model inference: the registered champion behind Ray Serve. Every error is "
    '`{"error": <code>, "detail": <text>}`; every answer carries the request id in `X-Request-ID`.',
    version="1",
    redoc_url=None,
)
UPLOAD_PAGE = Path(__file__).with_name("upload.html")
HEALTH_TIMEOUT_S = 30
RELOAD_TOKEN = Annotated[HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))]
"""Declares the reload token in the schema; the route checks it (for its own 401 and 403 bodies)."""
EXPLAIN_TARGET = Annotated[
    str | None, Query(description="The class to explain (a name from /classes); default: the predicted one.")
]
REQUEST_ID = "x-request-id"
"""Set by Serve's HTTP front (HAProxy or its proxy) when the client sends none."""


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


@api.middleware("http")
async def cors(request: Request, call_next: Any) -> Response:
    """CORS for the origins in ``serve.cors_origins`` (none by default), preflights included."""
    access: Access | None = getattr(request.app.state, "access", None)
    headers = access.cors_headers(request.headers.get("origin")) if access else {}
    if request.method == "OPTIONS" and headers:
        return Response(status_code=204, headers=headers)
    response = await call_next(request)
    response.headers.update(headers)
    return response


# Helpers come before the ingress: `@serve.ingress` captures the module's names when it runs.


class Admission:
    """Counts a request as in progress on its ingress replica while the block runs; 503
    ``overloaded`` at once when the replica already holds ``serve.ingress_max_inflight``."""

    def __init__(self, ingress: "Ingress"):
        self.ingress = ingress

    def __enter__(self) -> None:
        if self.ingress.inflight >= self.ingress.cfg.serve.ingress_max_inflight:
            raise ApiError("overloaded", f"{self.ingress.inflight} requests in progress here", retry_after=1)
        self.ingress.inflight += 1

    def __exit__(self, *exc: object) -> None:
        self.ingress.inflight -= 1


def prediction_log(cfg: ServeConfig, metrics: IngressMetrics) -> PredictionLog | None:
    """The replica's prediction log writer; None when ``serve.log_path`` is not set."""
    if cfg.log_path is None:
        return None
    settings = LogSettings(cfg.log_path, cfg.log_flush_s, cfg.log_flush_records, cfg.log_max_buffered, cfg.log_images)
    return PredictionLog(settings, metrics)


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: let in, parse, route, call the tiers, answer."""

    async def __init__(self, preprocessor: DeploymentHandle, model: DeploymentHandle, config: dict[str, Any]):
        self.cfg = LensopsConfig.model_validate(config)
        serve_cfg, name = self.cfg.serve, self.cfg.tracking.registered_model
        self.limits = InputLimits.from_config(serve_cfg)
        self.metrics = IngressMetrics()
        self.access = api.state.access = Access(serve_cfg, load_api_keys(serve_cfg))
        self.versions = RegistryVersions(runs.resolve_uri(self.cfg.tracking), name, model)
        self.router = Router(serve_cfg, name, self.versions, self.metrics)
        self.log = prediction_log(serve_cfg, self.metrics)
        self.answerer = Answerer(preprocessor, model, self.router, self.metrics, serve_cfg, self.log)
        self.judge = FeedbackDesk(self.log, self.versions, self.metrics)
        self.inflight = 0
        loop = asyncio.get_running_loop()
        self.watcher = loop.create_task(self.router.watch())
        self.flusher = loop.create_task(self.log.run()) if self.log else None
        # HAProxy sends a replica traffic once its constructor returns: by then it has loaded the
        # champion, or knows why it cannot (and answers 503 with that reason until it can).
        await self.router.first_refresh_done.wait()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(UPLOAD_PAGE.read_text())

    @api.post(
        "/predict",
        summary="Predict one image (multipart field `file` or JSON {'image': base64}), or a pair "
        "(fields or JSON keys `before` and `after`) for a change-detection model",
        **contract.route_docs(
            contract.PredictAnswers,
            contract.PREDICT_ERRORS,
            contract.PREDICT_BODY,
            contract.REQUEST_ID,
            contract.GEOTIFF_ANSWER,
            [contract.FORMAT_PARAMETER],
        ),
    )
    async def predict(self, request: Request) -> Response:
        try:
            with self._admitted(request):
                answer_format = contract.answer_format(request.query_params.get("format"))
                route = self.router.route()
                spec = route.answer.spec
                if answer_format == "geotiff":
                    require_image_answer(spec)
                uploads = await read_example(request, self.limits, spec.task.inputs)
                request_id = request.headers.get(REQUEST_ID, "")
                answer = await self.answerer.answer(uploads, route, request_id if self._sampled() else None)
                if answer_format == "geotiff":
                    tiff = answer_geotiff(answer, spec, uploads[spec.task.inputs[-1]])
                    return Response(
                        tiff, media_type="image/tiff", headers={"X-Model-Version": answer["model"]["version"]}
                    )
        except ApiError as exc:
            return self._reject(exc)
        return JSONResponse({**answer, "request_id": request_id})

    @api.post(
        "/explain",
        summary="Predict one image and show where the model looked (Grad-CAM); the one-image body of /predict",
        **contract.route_docs(
            contract.ExplainAnswer, contract.PREDICT_ERRORS, contract.IMAGE_BODY, contract.REQUEST_ID
        ),
    )
    async def explain(self, request: Request, target: EXPLAIN_TARGET = None) -> JSONResponse:
        try:
            with self._admitted(request):
                route = self.router.route()
                require_one_image(route.answer.spec, "explanations")
                (data,) = await read_images(request, self.limits, many=False)
                answer = await self.answerer.explain(data, route, target)
        except ApiError as exc:
            return self._reject(exc)
        return JSONResponse({**answer, "request_id": request.headers.get(REQUEST_ID, "")})

    @api.post(
        "/predict_batch",
        summary="Predict several images (multipart `files` or JSON {'images': [...]})",
        **contract.route_docs(
            contract.BatchAnswer, contract.PREDICT_ERRORS, contract.PREDICT_BATCH_BODY, contract.REQUEST_ID
        ),
    )
    async def predict_batch(self, request: Request) -> JSONResponse:
        try:
            with self._admitted(request):
                # 503 (no model) or 400 (a model of several inputs) before reading the body
                require_one_image(self.router.route().answer.spec, "batches")
                images = await read_images(request, self.limits, many=True)
                request_id, logged = request.headers.get(REQUEST_ID, ""), self._sampled()
                ids = [contract.item_id(request_id, index) for index in range(len(images))]
                answers = (
                    self.answerer.answer({SINGLE_IMAGE[0]: data}, self.router.route(), item if logged else None)
                    for data, item in zip(images, ids, strict=True)
                )
                results = await asyncio.gather(*answers, return_exceptions=True)
        except ApiError as exc:
            return self._reject(exc)
        items = [self._item(r, item) for r, item in zip(results, ids, strict=True)]
        return JSONResponse({"results": items, "request_id": request_id})

    @api.post(
        "/feedback",
        summary="Record the true label (or value) of a logged prediction",
        **contract.route_docs(contract.FeedbackAnswer, contract.FEEDBACK_ERRORS, contract.FEEDBACK_BODY),
    )
    async def feedback(self, request: Request) -> JSONResponse:
        try:
            with self._admitted(request):
                sent = await read_feedback(request, self.limits)
                answer = await self.judge.record(sent.request_id, sent.truth())
        except ApiError as exc:
            return self._reject(exc)
        return JSONResponse(answer)

    @api.get("/health", **contract.health_docs())
    async def health(self) -> JSONResponse:
        health = self.router.health()
        if health.version is not None:
            try:
                await asyncio.wait_for(self.answerer.model_for(health.version).describe.remote(), HEALTH_TIMEOUT_S)
            except Exception as exc:  # any failure to answer means not ready
                return JSONResponse({"status": "unavailable", "reason": f"model replica: {exc}"}, status_code=503)
        return JSONResponse(health.as_dict(), status_code=503 if health.status == "unavailable" else 200)

    @api.get("/classes", **contract.route_docs(contract.Classes, {503}))
    async def classes(self) -> JSONResponse:
        try:
            spec = self.router.require_champion().spec
        except ApiError as exc:
            return self._reject(exc)
        return JSONResponse({"task": spec.model.task, "classes": spec.classes})

    @api.get("/model", **contract.route_docs(contract.ModelDescription, {503}))
    async def model_info(self) -> JSONResponse:
        try:
            champion = self.router.require_champion()
        except ApiError as exc:
            return self._reject(exc)
        spec = champion.spec
        identity = {"name": self.router.name, "version": champion.version, "alias": champion.alias}
        return JSONResponse(
            identity
            | {
                "inputs": list(spec.task.inputs),
                "dataset_version": spec.dataset_version,
                "run_id": champion.run_id,
                "metrics": spec.metrics,
            }
            | {"spec": spec.model_dump(mode="json"), "challenger": self.router.challenger_info()}
        )

    @api.post(
        "/reload-model",
        summary="Swap to the version the alias points to now (bearer token)",
        **contract.route_docs(contract.Reload, {401, 403, 404, 502, 503}),
    )
    async def reload_model(self, request: Request, _token: RELOAD_TOKEN = None) -> JSONResponse:
        old = self.router.champion.version if self.router.champion else None
        try:
            check_reload_token(request.headers, self.cfg.serve.reload_token_env)
            new = await self.router.refresh()
        except ApiError as exc:
            return _error(exc)
        return JSONResponse({"old_version": old, "new_version": new, "alias": self.cfg.serve.alias})

    def _admitted(self, request: Request) -> Admission:
        """Let a prediction in: its API key, its client's rate, and room on this replica."""
        self.access.let_in(request.headers, request.client.host if request.client else None)
        return Admission(self)

    def _sampled(self) -> bool:
        """Whether this request's answers go to the prediction log (``serve.log_sample_rate``)."""
        return self.log is not None and random.random() < self.cfg.serve.log_sample_rate

    def _item(self, result: dict[str, Any] | BaseException, item_id: str) -> dict[str, Any]:
        if isinstance(result, ApiError):
            self.metrics.rejected(result.code)
            return result.body()
        if isinstance(result, BaseException):
            raise result
        return {**result, "request_id": item_id}

    async def __del__(self) -> None:
        """Serve calls this when the replica shuts down gracefully: what the log holds is written."""
        if self.flusher is not None:
            self.flusher.cancel()
            await self.log.flush()

    def _reject(self, exc: ApiError) -> JSONResponse:
        self.metrics.rejected(exc.code)
        return _error(exc)
