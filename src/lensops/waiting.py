"""Waiting for something to become true, with a deadline: the one polling loop of the project."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Call ``check`` until it returns something truthy, and return that; ``TimeoutError``
    naming ``what`` (and the last falsy value) after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s:g} s (last: {result!r})")
        time.sleep(interval_s)
    return result


def http_ok(url: str, timeout_s: float = 10) -> bool:
    """Whether a GET of ``url`` answers 200 now; a refused or timed-out connection is a no."""
    try:
        return requests.get(url, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False
