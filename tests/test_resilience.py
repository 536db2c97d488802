"""A service that loses nothing: replicas of every tier killed under load, a changed config
deployed under load, with two replicas of every tier.

A prediction is idempotent, so a call to a Preprocessor or Model replica that dies is tried
again on the other one: losing either loses no request. Losing an ingress replica loses at
most the requests in flight on it; HAProxy sends nothing more its way.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from processes import busiest, replica_pids
from ray import serve
from traffic import RequestLoop

from lensops.config import LensopsConfig
from lensops.monitoring import store
from lensops.runtime import free_port
from lensops.serving.app import build, run_local
from lensops.tracking import registry
from lensops.training.fit import TrainOutcome
from lensops.waiting import wait_until

pytestmark = pytest.mark.slow

NAME = "test-resilient"
APP = "lensops"
CLIENTS = 8
"""Enough that a killed Preprocessor or Model replica almost surely holds a call (4 was not always)."""
TIERS = ("Preprocessor", "Model", "Ingress")
FLUSH_S = 1.0
"""``serve.log_flush_s`` here: what a killed ingress replica may lose of the prediction log."""
WRITE_MARGIN_S = 1.0
"""Beyond the flush window: the write under way at the kill, and the answer's trip to the client."""
SETTLED_S = 1.0
"""After an ingress replica is killed, requests that end later than this must all succeed."""
RETRIED = re.compile(r"_Ingress \S+ (\S+) .*?-- (?:Preprocessor|Model) replica lost \(try")
"""An ingress log line of a tier call tried again; its first group is the request's id."""


def _config(classification_cfg: LensopsConfig, replicas: int) -> LensopsConfig:
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = NAME
    cfg.serve.watch_interval_s = 0
    cfg.serve.min_replicas = cfg.serve.max_replicas = replicas
    cfg.serve.ingress_min_replicas = cfg.serve.ingress_max_replicas = replicas
    cfg.serve.log_flush_s = FLUSH_S
    return cfg


def _running(deployment: str) -> int:
    states = serve.status().applications[APP].deployments[deployment].replica_states
    return states.get("RUNNING", 0)


def _settled(replicas: int) -> bool:
    return all(_running(tier) == replicas and len(replica_pids(APP, tier)) == replicas for tier in TIERS)


@pytest.fixture(scope="module")
def service(ray_cluster: None, classification_run: TrainOutcome, classification_cfg: LensopsConfig) -> Iterator[str]:
    """Two replicas of every tier, serving a champion of its own (the shared fit)."""
    uri = classification_cfg.tracking.tracking_uri
    trained = registry.find(uri, classification_run.model_name, classification_run.version)
    version = registry.register(uri, NAME, trained.run_id, trained.source, {}).version
    registry.set_alias(uri, NAME, registry.CHAMPION, version)
    url = run_local(_config(classification_cfg, replicas=2), port=free_port())
    wait_until(lambda: _settled(2), 180, "two running replicas of every tier")
    yield url
    serve.shutdown()


@pytest.fixture(scope="module")
def image(training_dir: Path) -> bytes:
    return sorted((training_dir / "dusty").glob("*.png"))[0].read_bytes()


@pytest.fixture(scope="module")
def kills(service: str, image: bytes) -> dict[str, dict]:
    """One replica of each tier killed in turn (SIGKILL, by process id) under a request loop;
    each kill's window lasts until Serve runs two replicas of that tier again."""
    windows = {}
    with RequestLoop(service, image, clients=CLIENTS) as loop:
        time.sleep(2)
        for tier in TIERS:
            victim = busiest(replica_pids(APP, tier))  # the one most likely to hold calls in flight
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda t=tier, v=victim: _settled(2) and v not in replica_pids(APP, t), 180, f"{tier} back")
            time.sleep(1)
            windows[tier] = (killed, time.monotonic())
    report: dict[str, dict] = {"loop": {"id_prefix": loop.id_prefix, "answered": loop.request_ids}}
    for tier, (start, end) in windows.items():
        requests_, failures, p99 = loop.between(start, end)
        report[tier] = {"killed_at": start, "requests": requests_, "failures": failures, "p99_s": p99}
        print(f"{tier} kill: {len(failures)} failed of {requests_} requests, p99 {p99 * 1000:.0f} ms")
    return report


@pytest.mark.parametrize("tier", ["Preprocessor", "Model"])
def test_losing_a_preprocessor_or_model_replica_loses_no_request(kills: dict[str, dict], tier: str) -> None:
    window = kills[tier]
    assert window["requests"] > 0
    assert window["failures"] == [], window["failures"][:3]


def test_losing_an_ingress_replica_loses_only_requests_in_flight_on_it(kills: dict[str, dict]) -> None:
    window = kills["Ingress"]
    late = [(at, text) for at, text in window["failures"] if at > window["killed_at"] + SETTLED_S]
    assert len(window["failures"]) <= CLIENTS, window["failures"]
    assert late == [], late[:3]


def test_a_retried_request_keeps_its_id_and_gets_its_answer(kills: dict[str, dict], serve_logs: Path) -> None:
    prefix, answered = kills["loop"]["id_prefix"], kills["loop"]["answered"]
    logged = "".join(path.read_text("utf-8") for path in serve_logs.glob(f"replica_{APP}_Ingress_*.log"))
    retried = {found for found in RETRIED.findall(logged) if found.startswith(f"{prefix}-")}
    assert retried, "no tier call was in flight on a killed replica"
    assert retried <= answered.keys(), sorted(retried - answered.keys())[:5]


def test_a_killed_ingress_loses_at_most_one_flush_window_of_the_prediction_log(
    kills: dict[str, dict], classification_cfg: LensopsConfig
) -> None:
    """Every answer that came before the last flush window ahead of the ingress kill is logged."""
    answered, killed = kills["loop"]["answered"], kills["Ingress"]["killed_at"]
    log = classification_cfg.serve.log_path
    must = {request_id for request_id, at in answered.items() if at < killed - FLUSH_S - WRITE_MARGIN_S}
    assert len(must) > 100  # the window is a small part of the loop
    logged = set(
        store.read(log, store.PREDICTIONS, where=pads.field("request_id").isin(list(must)))["request_id"].to_pylist()
    )
    assert must <= logged, f"{len(must - logged)} answers lost, e.g. {sorted(must - logged)[:3]}"


def test_deploying_a_changed_config_and_scaling_down_lose_no_request(
    service: str, kills: dict[str, dict], image: bytes, classification_cfg: LensopsConfig
) -> None:
    changed = _config(classification_cfg, replicas=1)
    changed.serve.batch_wait_timeout_s = 0.02  # new arguments for every tier: every replica is replaced
    changed.serve.max_request_bytes = 2 * classification_cfg.serve.max_request_bytes
    with RequestLoop(service, image, clients=CLIENTS) as loop:
        time.sleep(2)
        serve.run(build(changed), name=APP, route_prefix="/", blocking=False)
        wait_until(lambda: _settled(1), 300, "the changed application, one replica of every tier")
        time.sleep(2)
    assert len(loop.answers) > 0
    assert loop.failures == [], loop.failures[:3]
