"""A steady closed loop of real HTTP predictions, for checking swaps under load."""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

CLONE_NEWNET = 0x40000000


def join_network(namespace: Path) -> None:
    """Moves the calling thread, and only it, into a network namespace (``/proc/<pid>/ns/net``):
    the sockets it opens from then on reach that namespace's loopback."""
    libc = ctypes.CDLL(None, use_errno=True)
    with namespace.open() as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"cannot join the network namespace {namespace}")


@dataclass
class RequestLoop:
    """``clients`` threads each POST ``image`` to ``{url}/predict`` until stopped, back to back or
    ``pause_s`` apart (a paced loop leaves the CPU to a job that runs beside it, as training does);
    records which version answered each request, and every failure. Each request carries its
    own id, ``<id_prefix>-<n>``, as ``X-Request-ID``. With ``network`` set, the clients connect
    from that network namespace (see :func:`join_network`)."""

    url: str
    image: bytes
    clients: int = 4
    pause_s: float = 0.0
    answers: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, version) per successful request."""
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(monotonic time it ended, seconds it took) per request, failed ones included."""
    failed_at: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, what went wrong) per failed request."""
    request_ids: dict[str, float] = field(default_factory=dict)
    """The request id of every successful answer, and when it came (monotonic time)."""
    id_prefix: str = field(default_factory=lambda: f"loop-{uuid.uuid4().hex[:8]}")
    network: Path | None = None
    _numbers: itertools.count = field(default_factory=itertools.count)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> RequestLoop:
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    @property
    def failures(self) -> list[str]:
        return [text for _, text in self.failed_at]

    def versions(self) -> list[str]:
        return [version for _, version in self.answers]

    def between(self, start: float, end: float) -> tuple[int, list[tuple[float, str]], float]:
        """(requests, failures, p99 seconds) of the requests that ended in [start, end)."""
        took = sorted(s for at, s in self.latencies if start <= at < end)
        failures = [(at, text) for at, text in self.failed_at if start <= at < end]
        p99 = took[min(len(took) - 1, int(0.99 * len(took)))] if took else float("nan")
        return len(took), failures, p99

    def _client(self) -> None:
        if self.network is not None:
            join_network(self.network)
        with requests.Session() as session:
            while not self._stop.wait(self.pause_s):
                started = time.monotonic()
                headers = {"X-Request-ID": f"{self.id_prefix}-{next(self._numbers)}"}
                try:
                    response = session.post(
                        f"{self.url}/predict", files={"file": ("x.png", self.image)}, headers=headers, timeout=60
                    )
                except requests.RequestException as exc:
                    self.failed_at.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                    continue
                finally:
                    self.latencies.append((time.monotonic(), time.monotonic() - started))
                if response.status_code == 200:
                    answer = response.json()
                    self.answers.append((time.monotonic(), answer["model"]["version"]))
                    self.request_ids[answer["request_id"]] = time.monotonic()
                else:
                    self.failed_at.append((time.monotonic(), f"{response.status_code} {response.text[:200]}"))
