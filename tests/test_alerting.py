"""An alert reaches a person: a real Prometheus evaluates one of lensops' own rules, a real
Alertmanager (configured by ``lensops alertmanager-config``) routes it, and a webhook on
loopback receives it. The drift monitor's decision gets there two ways: its gauges through a
real Pushgateway and Prometheus' drift rule, or posted straight to Alertmanager. Debian's
``prometheus``, ``prometheus-alertmanager`` and ``prometheus-pushgateway`` packages."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from lensops.config import LensopsConfig
from lensops.monitoring import drift, trigger
from lensops.monitoring.alerting import AlertReceivers, alertmanager_config
from lensops.monitoring.drift import Check, Decision, Status
from lensops.monitoring.monitor import Checked, WindowSource
from lensops.monitoring.targets import Targets
from lensops.runtime import free_port
from lensops.tracking.registry import RegisteredVersion
from lensops.waiting import http_ok, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RULE = "LensopsNoHealthyModelReplicas"
"""Fires with no data at all (no Model replica reports healthy), so it needs no service."""


class Webhook(ThreadingHTTPServer):
    """A receiver on loopback that keeps every JSON document POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `make system-packages` installs it"
    return found


def _rule_due_now(folder: Path, name: str) -> None:
    """alerts.yml's rule ``name`` with its ``for:`` cut to nothing, so the test need not wait minutes."""
    groups = yaml.safe_load((REPO / "docker" / "prometheus" / "alerts.yml").read_text())["groups"]
    (rule,) = [r for group in groups for r in group["rules"] if r.get("alert") == name]
    (folder / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "due", "rules": [{**rule, "for": "0s"}]}]}))


@contextmanager
def _running(command: list[str], address: str, name: str) -> Iterator[None]:
    """``command`` running until the block ends, once its ``/-/ready`` at ``address`` answers."""
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            wait_until(lambda: http_ok(f"http://{address}/-/ready"), 30, f"{name} ready")
            yield
        finally:
            process.terminate()


@pytest.fixture
def alertmanager(webhook: Webhook, tmp_path: Path) -> Iterator[str]:
    receivers = AlertReceivers(webhook_url=webhook.url, group_wait="1s", group_interval="1s")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(receivers)))
    address = f"127.0.0.1:{free_port()}"
    command = [
        _binary("prometheus-alertmanager"),
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'alertmanager'}",
        f"--web.listen-address={address}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
    with _running(command, address, "Alertmanager"):
        yield address


@contextmanager
def _prometheus(alertmanager: str, folder: Path, rule: str, scraped: str | None = None) -> Iterator[None]:
    """A Prometheus that evaluates ``rule`` every second and sends it to ``alertmanager``;
    with ``scraped``, it also scrapes that address as prometheus.yml scrapes the Pushgateway."""
    _rule_due_now(folder, rule)
    config: dict[str, Any] = {
        "global": {"evaluation_interval": "1s", "scrape_interval": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "rule_files": [str(folder / "rules.yml")],
    }
    if scraped:
        config["scrape_configs"] = [
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [scraped]}]}
        ]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    command = [
        _binary("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'prometheus'}",
        f"--web.listen-address={address}",
        # a firing alert is sent again this often (1m by default): the first evaluation may come
        # before Prometheus has found its Alertmanager, and that first notice is dropped
        "--rules.alert.resend-delay=1s",
    ]
    with _running(command, address, "Prometheus"):
        yield


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    command = [_binary("prometheus-pushgateway"), f"--web.listen-address={address}"]
    with _running(command, address, "Pushgateway"):
        yield address


def _drift(status: Status = "drift") -> Checked:
    """A monitor pass as :func:`lensops.monitoring.monitor.check` returns it."""
    fired = drift.holm([Check("embedding", 0.04, 0.0001, 120), Check("input_mean[0]", 0.1, 0.4, 120)], 0.01)
    version = RegisteredVersion("elpv-defects", "7", "run-7", "models:/m/7")
    return Checked(version, WindowSource(images="s3://drone/night-12"), Decision(status, 120, 0.01, fired), "run-42")


def test_a_firing_lensops_alert_reaches_the_webhook_through_alertmanager(
    webhook: Webhook, alertmanager: str, tmp_path: Path
) -> None:
    with _prometheus(alertmanager, tmp_path, RULE):
        wait_until(lambda: webhook.received, 60, "a notification at the webhook")
    (alert,) = webhook.received[0]["alerts"]
    assert webhook.received[0]["receiver"] == "lensops-team" and webhook.received[0]["status"] == "firing"
    assert alert["labels"]["alertname"] == RULE and alert["labels"]["severity"] == "page"
    assert alert["annotations"]["summary"] == "lensops has no healthy Model replica"


def test_a_drift_decision_pushed_to_the_pushgateway_fires_the_drift_rule(
    webhook: Webhook, alertmanager: str, pushgateway: str, tmp_path: Path
) -> None:
    trigger.publish(_drift(), f"http://{pushgateway}", last_retrain=1_700_000_000.0)
    page = requests.get(f"http://{pushgateway}/metrics", timeout=10).text
    assert 'lensops_drift_detected{instance="",job="lensops-monitor",model="elpv-defects"} 1' in page
    assert 'lensops_drift_score{check="embedding",instance="",job="lensops-monitor",model="elpv-defects"} 0.04' in page
    with _prometheus(alertmanager, tmp_path, "LensopsDriftDetected", scraped=pushgateway):
        wait_until(lambda: webhook.received, 60, "the drift alert at the webhook")
    (alert,) = webhook.received[0]["alerts"]
    assert alert["labels"] == {"alertname": "LensopsDriftDetected", "model": "elpv-defects", "severity": "warning"}

    trigger.publish(_drift("ok"), f"http://{pushgateway}", last_retrain=None)  # the next pass replaces the last
    page = requests.get(f"http://{pushgateway}/metrics", timeout=10).text
    assert 'lensops_drift_detected{instance="",job="lensops-monitor",model="elpv-defects"} 0' in page
    assert "lensops_drift_last_retrain_timestamp_seconds" not in page


def test_notify_posts_the_drift_straight_to_alertmanager(webhook: Webhook, alertmanager: str) -> None:
    cfg = LensopsConfig.model_validate({"monitor": {"on_drift": "notify"}})

    action = trigger.respond(cfg, _drift(), Targets(alertmanager=f"http://{alertmanager}"))

    assert action == f"alert LensopsDriftDetected sent to http://{alertmanager}"
    wait_until(lambda: webhook.received, 60, "the drift alert at the webhook")
    (alert,) = webhook.received[0]["alerts"]
    assert alert["labels"]["alertname"] == "LensopsDriftDetected" and alert["labels"]["version"] == "7"
    assert alert["annotations"]["summary"] == "elpv-defects v7: drift: 120 images; fired: embedding"
    assert alert["annotations"]["mlflow_run"] == "run-42"
