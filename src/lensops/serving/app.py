"""The Ray Serve application: Ingress (HTTP) -> Preprocessor (CPU) -> Model (batched).

:func:`build` composes the three deployments from one config (``serve_app.build_app`` for
``serve deploy`` returns it); :func:`run_local` deploys it on the connected Ray and waits for
it to be healthy. A hot swap is a change of the version the ingress routes to: requests in
flight finish on the old version, new ones go to the new version, no replica restarts.
"""

from __future__ import annotations

from pathlib import Path

from ray import serve

from lensops.config import LensopsConfig
from lensops.data import storage
from lensops.serving.api import Ingress
from lensops.serving.model_tier import Model
from lensops.serving.preprocessor import Preprocessor
from lensops.serving.uploads import InputLimits
from lensops.tracking import runs
from lensops.waiting import http_ok, wait_until

INGRESS_HEADROOM = 16
"""Requests an ingress replica takes beyond ``serve.ingress_max_inflight``, so that those past
the bound are answered 503 at once by the replica instead of waiting in Serve's queue."""
PREPROCESSOR_MAX_ONGOING = 16
MODEL_BATCHES_ONGOING = 4
"""A model replica accepts this many ``serve.max_batch_size`` batches' worth of requests."""
CPUS = {"Ingress": 0.25, "Preprocessor": 0.25, "Model": 0.5}
"""Logical CPUs each replica reserves (as in serve_config.yaml): two replicas of every tier fit
the 2 CPUs of a laptop; the work itself is not capped by them."""
DRAIN_MARGIN_S = 5.0
"""Beyond ``serve.request_timeout_s``, the time a replica being replaced has to answer what it holds."""


def build(cfg: LensopsConfig, ingress_env: dict[str, str] | None = None) -> serve.Application:
    """Compose the three deployments from one config.

    ``ingress_env`` sets environment variables of the ingress replicas only (e.g. the reload
    token); with ``serve deploy`` use the application's ``runtime_env`` instead."""
    cfg = cfg.model_copy(deep=True)
    cfg.tracking.tracking_uri = runs.resolve_uri(cfg.tracking)  # replicas run elsewhere
    if cfg.serve.log_path and not storage.is_s3(cfg.serve.log_path):
        cfg.serve.log_path = str(Path(cfg.serve.log_path).expanduser().resolve())
    serve_cfg = cfg.serve
    autoscaling = {
        "min_replicas": serve_cfg.min_replicas,
        "max_replicas": serve_cfg.max_replicas,
        "target_ongoing_requests": serve_cfg.target_ongoing_requests,
    }
    spread = {"max_replicas_per_node": serve_cfg.max_replicas_per_node} if serve_cfg.max_replicas_per_node else {}
    # A replica being replaced (a redeploy, a scale-down) first leaves the rotation, then finishes
    # what it holds: for as long as a request may take, so no deadline is cut short.
    drain = {"graceful_shutdown_timeout_s": serve_cfg.request_timeout_s + DRAIN_MARGIN_S, **spread}
    # A tier's queue is bounded: past it, calls fail at once and the ingress answers 503.
    tier = {"autoscaling_config": autoscaling, "max_queued_requests": serve_cfg.max_queued_requests, **drain}
    # Serve's default of 5 ongoing requests per replica made the ingress reject everything past 5
    # concurrent requests (the proxy backs off and retries: throughput collapsed at 16+ clients)
    # and capped every model batch at 5 images. serve_config.yaml sets the same per deployment.
    preprocessor = Preprocessor.options(
        max_ongoing_requests=PREPROCESSOR_MAX_ONGOING, **_actor_options("Preprocessor"), **tier
    ).bind(InputLimits.from_config(serve_cfg).model_dump())
    model_ongoing = MODEL_BATCHES_ONGOING * serve_cfg.max_batch_size  # next batch fills while one runs
    model = Model.options(max_ongoing_requests=model_ongoing, **_actor_options("Model"), **tier).bind(
        cfg.tracking.tracking_uri,
        cfg.tracking.registered_model,
        serve_cfg.device,
        serve_cfg.max_batch_size,
        serve_cfg.batch_wait_timeout_s,
        serve_cfg.log_path is not None and serve_cfg.log_embeddings,
        serve_cfg.runtime,
    )
    ingress_autoscaling = {
        "min_replicas": serve_cfg.ingress_min_replicas,
        "max_replicas": serve_cfg.ingress_max_replicas,
        "target_ongoing_requests": max(1, serve_cfg.ingress_max_inflight // 4),
    }
    ingress = Ingress.options(
        autoscaling_config=ingress_autoscaling,
        max_ongoing_requests=serve_cfg.ingress_max_inflight + INGRESS_HEADROOM,
        **drain,
        **_actor_options("Ingress", ingress_env),
    )
    return ingress.bind(preprocessor, model, cfg.model_dump(mode="json"))


def _actor_options(tier: str, env_vars: dict[str, str] | None = None) -> dict[str, dict]:
    options: dict = {"num_cpus": CPUS[tier]}
    if env_vars:
        options["runtime_env"] = {"env_vars": env_vars}
    return {"ray_actor_options": options}


def run_local(
    cfg: LensopsConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    ingress_env: dict[str, str] | None = None,
    timeout_s: float = 180,
) -> str:
    """Deploy the application on the connected Ray and wait until ``/health`` answers 200."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(cfg, ingress_env), name="lensops", route_prefix="/")
    url = f"http://{host}:{port}"
    wait_until(lambda: http_ok(f"{url}/health", timeout_s=60), timeout_s, f"a healthy service at {url}")
    return url
