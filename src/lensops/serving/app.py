"""The Ray Serve application: Ingress (HTTP) -> Preprocessor (CPU) -> Model (batched).

:func:`build` composes the three deployments from one config (``serve_app.build_app`` for
``serve deploy`` returns it); :func:`run_local` deploys it on the connected Ray and waits for
it to be healthy. A hot swap is a change of the version the ingress routes to: requests in
flight finish on the old version, new ones go to the new version, no replica restarts.
"""

from __future__ import annotations

from ray import serve

from lensops.config import LensopsConfig
from lensops.serving.api import Ingress
from lensops.serving.inputs import InputLimits
from lensops.serving.tiers import Model, Preprocessor
from lensops.tracking import runs
from lensops.waiting import http_ok, wait_until

INGRESS_MAX_ONGOING = 256
"""Requests one ingress replica holds at once (each mostly awaits the tiers behind it)."""
PREPROCESSOR_MAX_ONGOING = 16
MODEL_BATCHES_ONGOING = 4
"""A model replica accepts this many ``serve.max_batch_size`` batches' worth of requests."""


def build(cfg: LensopsConfig, ingress_env: dict[str, str] | None = None) -> serve.Application:
    """Compose the three deployments from one config.

    ``ingress_env`` sets environment variables of the ingress replicas only (e.g. the reload
    token); with ``serve deploy`` use the application's ``runtime_env`` instead."""
    cfg = cfg.model_copy(deep=True)
    cfg.tracking.tracking_uri = runs.resolve_uri(cfg.tracking)  # replicas run elsewhere
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
    """Deploy the application on the connected Ray and wait until ``/health`` answers 200."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build(cfg, ingress_env), name="lensops", route_prefix="/")
    url = f"http://{host}:{port}"
    wait_until(lambda: http_ok(f"{url}/health", timeout_s=60), timeout_s, f"a healthy service at {url}")
    return url
