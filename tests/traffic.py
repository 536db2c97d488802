"""A steady closed loop of real HTTP predictions, for checking swaps under load."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class RequestLoop:
    """``clients`` threads each POST ``image`` to ``{url}/predict`` back to back until stopped;
    records which version answered each request, and every failure."""

    url: str
    image: bytes
    clients: int = 4
    answers: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, version) per successful request."""
    failed_at: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, what went wrong) per failed request."""
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

    def _client(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.post(f"{self.url}/predict", files={"file": ("x.png", self.image)}, timeout=60)
                except requests.RequestException as exc:
                    self.failed_at.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                    continue
                if response.status_code == 200:
                    self.answers.append((time.monotonic(), response.json()["model"]["version"]))
                else:
                    self.failed_at.append((time.monotonic(), f"{response.status_code} {response.text[:200]}"))
