"""The Ray Serve application: Ingress (FastAPI) -> Preprocessor (CPU) -> Model (batched).

* ``Preprocessor`` checks and decodes uploads with the model's own preprocessing spec and
  passes uint8 arrays on (never float32).
* ``Model`` holds registered versions with ``@serve.multiplexed`` (the version number is the
  model id) and answers with ``@serve.batch``; batches never mix versions.
* ``Ingress`` decides which version answers. A hot swap is a change of that id: requests in
  flight finish on the old version, new ones go to the new version, no replica restarts.
* Challenger traffic (``serve.challenger_mode``): in ``canary`` mode the version under
  ``serve.challenger_alias`` answers ``serve.canary_percent`` of the images; in ``shadow`` mode
  the champion answers and the challenger predicts the same uint8 input in the background, where
  its answer is only logged, counted and compared with the champion's.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures of the
# class-based ingress at import time and needs real types (e.g. `request: Request`).
import asyncio
import hmac
import logging
import os
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from lensops import registry, tracking
from lensops.artifact import ModelSpec
from lensops.config import LensopsConfig
from lensops.inference import Predictor, load_predictor
from lensops.inputs import InputError, InputLimits, decode_base64, prepare
from lensops.preprocess import PreprocessSpec
from lensops.service_metrics import IngressMetrics, ModelMetrics

api = FastAPI(
    title="lensops",
    description="Image model inference: the registered champion behind Ray Serve.",
    version="1",
)
UPLOAD_PAGE = Path(__file__).with_name("upload.html")
INGRESS_MAX_ONGOING = 256
"""Requests one ingress replica holds at once (each mostly awaits the tiers behind it)."""
PREPROCESSOR_MAX_ONGOING = 16
MODEL_BATCHES_ONGOING = 4
"""A model replica accepts this many ``serve.max_batch_size`` batches' worth of requests."""
logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the replica's log file


# Helpers come before the deployments: `@serve.ingress` captures the class at definition time.


async def _form_files(request: Request, field: str) -> list[bytes]:
    form = await request.form()
    return [await item.read() for item in form.getlist(field) if hasattr(item, "read")]


async def _json_images(request: Request, field: str, many: bool) -> list[bytes]:
    try:
        body = await request.json()
    except ValueError:
        raise InputError("invalid_json", "request body is not valid JSON") from None
    value = body.get(field) if isinstance(body, dict) else None
    if value is None:
        return []
    if many != isinstance(value, list):
        kind = "a list of base64 strings" if many else "a base64 string"
        raise InputError("missing_field", f"'{field}' must be {kind}")
    return [decode_base64(v) for v in (value if many else [value])]


def _agrees(champion: str | float, challenger: str | float) -> bool:
    """Same label; for regression, within 5% of the champion's value (1e-6 around zero)."""
    if isinstance(champion, str) or isinstance(challenger, str):
        return champion == challenger
    return abs(challenger - champion) <= max(0.05 * abs(champion), 1e-6)


def _device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Preprocessor:
    """CPU tier: validate and decode one image into the model's uint8 input."""

    def __init__(self, limits: dict[str, int]):
        self.limits = InputLimits.model_validate(limits)

    def __call__(self, data: bytes, spec: PreprocessSpec) -> np.ndarray | InputError:
        try:
            return prepare(data, spec, self.limits)
        except InputError as exc:
            return exc


@serve.deployment(ray_actor_options={"num_cpus": 1})
class Model:
    """Model tier: registered versions loaded on demand, requests answered in batches."""

    def __init__(self, tracking_uri: str, model_name: str, device: str, max_batch_size: int, batch_wait_s: float):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.device = _device(device)
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_s)
        self.metrics = ModelMetrics()

    @serve.multiplexed(max_num_models_per_replica=3)
    async def predictor(self, version: str) -> Predictor:
        loaded = await asyncio.to_thread(load_predictor, self.tracking_uri, self.model_name, version, self.device)
        self.metrics.loaded(loaded.info.version)
        return loaded

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        predictor = await self.predictor(serve.get_multiplexed_model_id())
        started = time.perf_counter()
        answers = await asyncio.to_thread(predictor.predict, np.stack(images))
        self.metrics.batch(predictor.info.version, len(images), time.perf_counter() - started)
        return [{**a, "model": predictor.info.as_dict()} for a in answers]

    async def describe(self) -> dict[str, Any]:
        predictor = await self.predictor(serve.get_multiplexed_model_id())
        return {"model": predictor.info.as_dict(), "spec": predictor.spec.model_dump(mode="json")}


@dataclass(frozen=True)
class Active:
    """A version the ingress routes to, under the alias it answers as (None when pinned)."""

    version: str
    run_id: str
    spec: ModelSpec
    alias: str | None


@dataclass
class ShadowTally:
    """Running summary of one challenger version shadowing one champion version."""

    answers: int = 0
    agreeing: int = 0
    errors: int = 0

    def add(self, agrees: bool) -> None:
        self.answers += 1
        self.agreeing += agrees

    def as_dict(self) -> dict[str, Any]:
        agreement = self.agreeing / self.answers if self.answers else None
        return {"shadow_answers": self.answers, "shadow_agreement": agreement, "shadow_errors": self.errors}


@serve.deployment
@serve.ingress(api)
class Ingress:
    """HTTP front: request parsing, version routing, hot swap, health and metrics."""

    def __init__(self, preprocessor: DeploymentHandle, model: DeploymentHandle, config: dict[str, Any]):
        self.cfg = LensopsConfig.model_validate(config)
        # By value over the replicas' own gRPC servers, not through Ray's object store: the
        # images are small and answers are never passed on as ObjectRefs. Explicit, because a
        # handle's default is fixed where it was built (the driver), not where it is used.
        self.preprocessor = preprocessor.options(_by_reference=False)
        self.model = model.options(_by_reference=False)
        self.uri = tracking.resolve_uri(self.cfg.tracking)
        self.name = self.cfg.tracking.registered_model
        self.active: Active | None = None
        self.challenger: Active | None = None
        self.rng = random.Random()
        self.shadow_tallies: dict[tuple[str, str], ShadowTally] = {}
        self.shadow_tasks: set[asyncio.Task[None]] = set()
        self.last_error = f"waiting for '{self.cfg.serve.version or self.cfg.serve.alias}' of model '{self.name}'"
        self.metrics = IngressMetrics()
        self.swap_lock = asyncio.Lock()
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    # ---- routes -------------------------------------------------------------------------

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(UPLOAD_PAGE.read_text())

    @api.post("/predict", summary="Predict one image (multipart field `file` or JSON {'image': base64})")
    async def predict(self, request: Request) -> JSONResponse:
        try:
            active, challenger = self._require_active(), self.challenger
            (data,) = await self._images(request, "file", "image", many=False)
            return JSONResponse(await self._answer(data, active, challenger))
        except InputError as exc:
            return self._reject(exc)

    @api.post("/predict_batch", summary="Predict several images (multipart `files` or JSON {'images': [...]})")
    async def predict_batch(self, request: Request) -> JSONResponse:
        try:
            active, challenger = self._require_active(), self.challenger
            images = await self._images(request, "files", "images", many=True)
        except InputError as exc:
            return self._reject(exc)
        answers = (self._answer(data, active, challenger) for data in images)
        results = await asyncio.gather(*answers, return_exceptions=True)
        return JSONResponse({"results": [self._item(r) for r in results]})

    @api.get("/health")
    async def health(self) -> JSONResponse:
        if self.active is None:
            return JSONResponse({"status": "unavailable", "reason": self.last_error}, status_code=503)
        try:
            await asyncio.wait_for(self._model_for(self.active.version).describe.remote(), timeout=30)
        except Exception as exc:  # any failure to answer means not ready
            return JSONResponse({"status": "unavailable", "reason": f"model replica: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok", "version": self.active.version})

    @api.get("/classes")
    async def classes(self) -> JSONResponse:
        try:
            active = self._require_active()
        except InputError as exc:
            return self._reject(exc)
        return JSONResponse({"task": active.spec.task, "classes": active.spec.classes})

    @api.get("/model")
    async def model_info(self) -> JSONResponse:
        try:
            active = self._require_active()
        except InputError as exc:
            return self._reject(exc)
        return JSONResponse(
            {
                **self._identity(active),
                "run_id": active.run_id,
                "metrics": active.spec.metrics,
                "spec": active.spec.model_dump(mode="json"),
                "challenger": self._challenger_info(active),
            }
        )

    @api.post("/reload-model", summary="Swap to the version the alias points to now (bearer token)")
    async def reload_model(self, request: Request) -> JSONResponse:
        expected = os.environ.get(self.cfg.serve.reload_token_env, "")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not expected:
            body = {"error": "reload_disabled", "detail": f"set {self.cfg.serve.reload_token_env} to enable reloads"}
            return JSONResponse(body, status_code=403)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return JSONResponse({"error": "unauthorized", "detail": "missing or wrong bearer token"}, status_code=401)
        old = self.active.version if self.active else None
        try:
            new = await self._refresh()
        except LookupError as exc:
            return JSONResponse({"error": "no_such_version", "detail": str(exc)}, status_code=404)
        return JSONResponse({"old_version": old, "new_version": new, "alias": self.cfg.serve.alias})

    # ---- helpers ------------------------------------------------------------------------

    def _model_for(self, version: str) -> DeploymentHandle:
        return self.model.options(multiplexed_model_id=version)

    def _identity(self, active: Active) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": active.version,
            "alias": active.alias,
            "dataset_version": active.spec.dataset_version,
        }

    def _require_active(self) -> Active:
        if self.active is None:
            raise InputError("model_unavailable", self.last_error)
        return self.active

    def _challenger_info(self, champion: Active) -> dict[str, Any] | None:
        challenger, serve_cfg = self.challenger, self.cfg.serve
        if challenger is None:
            return None
        info = {
            "version": challenger.version,
            "alias": challenger.alias,
            "mode": serve_cfg.challenger_mode,
            "canary_percent": serve_cfg.canary_percent,
        }
        if serve_cfg.challenger_mode == "shadow":
            info |= self.shadow_tallies.get((champion.version, challenger.version), ShadowTally()).as_dict()
        return info

    def _pick(self, champion: Active, challenger: Active | None) -> tuple[Active, Active | None]:
        """Who answers one image, and who predicts it in the shadow (if anyone)."""
        if challenger is None:
            return champion, None
        if self.cfg.serve.challenger_mode == "shadow":
            return champion, challenger
        return (challenger if self.rng.random() * 100 < self.cfg.serve.canary_percent else champion), None

    async def _prepare(self, data: bytes, spec: ModelSpec) -> np.ndarray:
        prepared = await self.preprocessor.remote(data, spec.preprocess)
        if isinstance(prepared, InputError):
            raise prepared
        return prepared

    async def _answer(self, data: bytes, champion: Active, challenger: Active | None) -> dict[str, Any]:
        started = time.perf_counter()
        active, shadow = self._pick(champion, challenger)
        prepared = await self._prepare(data, active.spec)
        answer = await self._model_for(active.version).predict.remote(prepared)
        answer["model"] = {**answer["model"], "alias": active.alias}
        self.metrics.answered(answer, time.perf_counter() - started)
        if shadow is not None:
            self._in_background(self._shadow(shadow, active, answer, data, prepared))
        return answer

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.shadow_tasks.add(task)  # the loop itself keeps only a weak reference
        task.add_done_callback(self.shadow_tasks.discard)

    async def _shadow(
        self, challenger: Active, champion: Active, answer: dict[str, Any], data: bytes, prepared: np.ndarray
    ) -> None:
        """Predict an answered image with the challenger: logged and counted, never returned."""
        tally = self.shadow_tallies.setdefault((champion.version, challenger.version), ShadowTally())
        try:
            if challenger.spec.preprocess != champion.spec.preprocess:
                prepared = await self._prepare(data, challenger.spec)
            shadow = await self._model_for(challenger.version).predict.remote(prepared)
        except Exception as exc:  # the client has its answer already; a failing challenger is only counted
            tally.errors += 1
            self.metrics.shadow_failed(challenger.version)
            logger.warning("shadow v%s failed: %r", challenger.version, exc)
            return
        agrees = _agrees(answer["prediction"], shadow["prediction"])
        tally.add(agrees)
        self.metrics.shadowed(challenger.version, champion.version, agrees)
        logger.info(
            "shadow v%s: %s, champion v%s: %s (%s)",
            challenger.version,
            shadow["prediction"],
            champion.version,
            answer["prediction"],
            "agree" if agrees else "disagree",
        )

    def _item(self, result: dict[str, Any] | BaseException) -> dict[str, Any]:
        if isinstance(result, InputError):
            self.metrics.rejected(result.reason)
            return result.body()
        if isinstance(result, BaseException):
            raise result
        return result

    def _reject(self, exc: InputError) -> JSONResponse:
        self.metrics.rejected(exc.reason)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def _images(self, request: Request, form_field: str, json_field: str, many: bool) -> list[bytes]:
        limit = self.cfg.serve.max_request_bytes * (self.cfg.serve.max_batch_items if many else 1)
        length = int(request.headers.get("content-length") or 0)
        if length > limit:
            raise InputError("request_too_large", f"request has {length} bytes; the limit is {limit}")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            images = await _form_files(request, form_field)
        elif content_type.startswith("application/json"):
            images = await _json_images(request, json_field, many)
        else:
            raise InputError(
                "unsupported_media_type",
                f"content type '{content_type or 'none'}': send multipart/form-data or application/json",
            )
        if not images:
            raise InputError("missing_field", f"no image in field '{form_field}' or JSON key '{json_field}'")
        if len(images) > self.cfg.serve.max_batch_items or (not many and len(images) > 1):
            raise InputError(
                "too_many_images", f"{len(images)} images; send at most {self.cfg.serve.max_batch_items if many else 1}"
            )
        return images

    async def _refresh(self) -> str:
        """Point the service at the configured champion and challenger; warm each before switching."""
        async with self.swap_lock:
            ref = self.cfg.serve.version or self.cfg.serve.alias
            champion = await self._follow(ref, None if self.cfg.serve.version else ref, self.active)
            if champion is None:
                raise LookupError(f"registered model '{self.name}' has no version or alias '{ref}'")
            challenger = await self._follow_challenger(champion)
            self.active, self.challenger = champion, challenger
            self.metrics.active(champion.version, challenger.version if challenger else None)
            return champion.version

    async def _follow_challenger(self, champion: Active) -> Active | None:
        """None when the mode is off, or the alias is missing, unloadable or on the champion's version."""
        alias = self.cfg.serve.challenger_alias
        if self.cfg.serve.challenger_mode == "off":
            return None
        try:
            return await self._follow(alias, alias, self.challenger, exclude=champion.version)
        except Exception as exc:  # a broken challenger never holds up the champion
            logger.warning("challenger '%s' of '%s' not loaded: %r", alias, self.name, exc)
            return None

    async def _follow(
        self, ref: str, alias: str | None, current: Active | None, exclude: str | None = None
    ) -> Active | None:
        """The version ``ref`` names now, warmed on the model tier (``current`` when it did not move);
        None when there is none or it is ``exclude``."""
        found = await asyncio.to_thread(registry.find, self.uri, self.name, ref)
        if found is None or found.version == exclude:
            return None
        if current is not None and current.version == found.version:
            return current
        spec = await asyncio.to_thread(registry.load_spec, self.uri, found)
        await self._model_for(found.version).describe.remote()
        return Active(version=found.version, run_id=found.run_id, spec=spec, alias=alias)

    async def _watch(self) -> None:
        """Load the model at start, then follow the aliases every ``watch_interval_s``."""
        while True:
            try:
                await self._refresh()
            except Exception as exc:  # keep serving the current version; report on /health
                self.last_error = f"cannot load '{self.cfg.serve.version or self.cfg.serve.alias}': {exc}"
            interval = self.cfg.serve.watch_interval_s
            if not interval and self.active is not None:
                return
            await asyncio.sleep(interval or 2.0)


def build(cfg: LensopsConfig, ingress_env: dict[str, str] | None = None) -> serve.Application:
    """Compose the three deployments from one config (what ``serve_app.build_app`` returns).

    ``ingress_env`` sets environment variables of the ingress replicas only (e.g. the reload
    token); with ``serve deploy`` use the application's ``runtime_env`` instead."""
    cfg = cfg.model_copy(deep=True)
    cfg.tracking.tracking_uri = tracking.resolve_uri(cfg.tracking)  # replicas run elsewhere
    serve_cfg = cfg.serve
    autoscaling = {
        "min_replicas": serve_cfg.min_replicas,
        "max_replicas": serve_cfg.max_replicas,
        "target_ongoing_requests": serve_cfg.target_ongoing_requests,
    }
    spread = {"max_replicas_per_node": serve_cfg.max_replicas_per_node} if serve_cfg.max_replicas_per_node else {}
    # Serve's default of 5 ongoing requests per replica made the ingress reject everything past 5
    # concurrent requests (the proxy backs off and retries: throughput collapsed at 16+ clients)
    # and capped every model batch at 5 images. serve_config.yaml sets the same per deployment.
    preprocessor = Preprocessor.options(
        autoscaling_config=autoscaling, max_ongoing_requests=PREPROCESSOR_MAX_ONGOING, **spread
    ).bind(InputLimits.from_config(serve_cfg).model_dump())
    model_ongoing = MODEL_BATCHES_ONGOING * serve_cfg.max_batch_size  # next batch fills while one runs
    model = Model.options(autoscaling_config=autoscaling, max_ongoing_requests=model_ongoing, **spread).bind(
        cfg.tracking.tracking_uri,
        cfg.tracking.registered_model,
        serve_cfg.device,
        serve_cfg.max_batch_size,
        serve_cfg.batch_wait_timeout_s,
    )
    env = {"ray_actor_options": {"runtime_env": {"env_vars": ingress_env}}} if ingress_env else {}
    ingress = Ingress.options(
        num_replicas=serve_cfg.ingress_replicas, max_ongoing_requests=INGRESS_MAX_ONGOING, **spread, **env
    )
    return ingress.bind(preprocessor, model, cfg.model_dump(mode="json"))


def run_local(
    cfg: LensopsConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress_env: dict[str, str] | None = None,
    timeout_s: float = 180,
) -> str:
    """Deploy the application on the connected Ray and wait until ``/health`` is 200."""
    import requests

    serve.start(http_options={"host": host, "port": port})
    serve.run(build(cfg, ingress_env), name="lensops", route_prefix="/")
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while (health := requests.get(f"{url}/health", timeout=60)).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"service not healthy after {timeout_s}s: {health.text}")
        time.sleep(1)
    return url
