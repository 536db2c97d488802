"""An alert reaches a person: a real Prometheus evaluates one of lensops' own rules, a real
Alertmanager (configured by ``lensops alertmanager-config``) routes it, and a webhook on
loopback receives it. Debian's ``prometheus`` and ``prometheus-alertmanager`` packages."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lensops.monitoring.alerting import AlertReceivers, alertmanager_config
from lensops.runtime import free_port
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


def _rule_due_now(folder: Path) -> None:
    """alerts.yml's rule with its ``for:`` cut to nothing, so the test need not wait minutes."""
    groups = yaml.safe_load((REPO / "docker" / "prometheus" / "alerts.yml").read_text())["groups"]
    (rule,) = [r for group in groups for r in group["rules"] if r.get("alert") == RULE]
    (folder / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "due", "rules": [{**rule, "for": "0s"}]}]}))


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
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            wait_until(lambda: http_ok(f"http://{address}/-/ready"), 30, "Alertmanager ready")
            yield address
        finally:
            process.terminate()


@pytest.fixture
def prometheus(alertmanager: str, tmp_path: Path) -> Iterator[None]:
    _rule_due_now(tmp_path)
    config = {
        "global": {"evaluation_interval": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "rule_files": [str(tmp_path / "rules.yml")],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    command = [
        _binary("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'prometheus'}",
        f"--web.listen-address={address}",
        # a firing alert is sent again this often (1m by default): the first evaluation may come
        # before Prometheus has found its Alertmanager, and that first notice is dropped
        "--rules.alert.resend-delay=1s",
    ]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            wait_until(lambda: http_ok(f"http://{address}/-/ready"), 30, "Prometheus ready")
            yield
        finally:
            process.terminate()


def test_a_firing_lensops_alert_reaches_the_webhook_through_alertmanager(webhook: Webhook, prometheus: None) -> None:
    wait_until(lambda: webhook.received, 60, "a notification at the webhook")
    (alert,) = webhook.received[0]["alerts"]
    assert webhook.received[0]["receiver"] == "lensops-team" and webhook.received[0]["status"] == "firing"
    assert alert["labels"]["alertname"] == RULE and alert["labels"]["severity"] == "page"
    assert alert["annotations"]["summary"] == "lensops has no healthy Model replica"
