"""Who may call the service, from where, and how often: API keys, CORS and a per-client rate limit.

All of it is off by default. API keys guard the prediction routes when any is configured
(several at once, so that keys can be rotated); they are compared in constant time and never
logged. The rate limit is a token bucket per client (its API key, else its address).
"""

from __future__ import annotations

import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lensops.config import ServeConfig
from lensops.serving.errors import ApiError

MAX_CLIENTS = 10_000
"""Buckets kept at most; the least recently seen client is forgotten first."""


def load_api_keys(cfg: ServeConfig, environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """Keys from ``$<serve.api_keys_env>`` (comma-separated) and ``serve.api_keys_file`` (one a line)."""
    keys = {key.strip() for key in environ.get(cfg.api_keys_env, "").split(",")}
    if cfg.api_keys_file:
        keys |= {line.strip() for line in Path(cfg.api_keys_file).read_text().splitlines()}
    return frozenset(key for key in keys if key)


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request presents: ``X-API-Key``, or ``Authorization: Bearer <key>``."""
    return headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()


@dataclass
class TokenBucket:
    rate: float
    """Tokens added per second."""
    burst: int
    tokens: float = field(init=False)
    updated: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Access:
    def __init__(self, cfg: ServeConfig, keys: frozenset[str], clock: Callable[[], float] = time.monotonic):
        self.cfg, self.keys, self.clock = cfg, keys, clock
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def let_in(self, headers: Mapping[str, str], address: str | None) -> None:
        """A prediction request passes its key check and its client's rate, or ``ApiError``."""
        self.check_key(headers)
        self.admit(client_of(headers, address))

    def check_key(self, headers: Mapping[str, str]) -> None:
        """``unauthorized`` unless keys are off or the request presents one of them."""
        if not self.keys:
            return
        given = presented_key(headers).encode()
        if not any(hmac.compare_digest(given, key.encode()) for key in self.keys):
            raise ApiError("unauthorized", "missing or unknown API key: send it as X-API-Key or a bearer token")

    def admit(self, client: str) -> None:
        """``rate_limited`` (with the seconds to wait) when ``client`` is past its rate."""
        if self.cfg.rate_limit_per_s is None:
            return
        bucket = self.buckets.pop(client, None) or TokenBucket(self.cfg.rate_limit_per_s, self.cfg.rate_limit_burst)
        self.buckets[client] = bucket
        while len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        wait = bucket.take(self.clock())
        if wait:
            raise ApiError("rate_limited", f"more than {self.cfg.rate_limit_per_s:g} requests/s", retry_after=wait)

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers for a request from ``origin``; none unless it is an allowed one."""
        allowed = self.cfg.cors_origins
        if not origin or not ("*" in allowed or origin in allowed):
            return {}
        return {
            "Access-Control-Allow-Origin": "*" if "*" in allowed else origin,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-API-Key, X-Request-ID",
            "Access-Control-Expose-Headers": "X-Request-ID, Retry-After",
            "Vary": "Origin",
        }


def check_reload_token(headers: Mapping[str, str], variable: str, environ: Mapping[str, str] = os.environ) -> None:
    """``POST /reload-model`` needs the bearer token in ``$variable``; reloads are off without one."""
    expected = environ.get(variable, "")
    if not expected:
        raise ApiError("reload_disabled", f"set {variable} to enable reloads")
    given = headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError("unauthorized", "missing or wrong bearer token")


def client_of(headers: Mapping[str, str], address: str | None) -> str:
    """Who a request counts against: its API key if any, else the first forwarded address."""
    key = presented_key(headers)
    if key:
        return f"key:{hmac.new(b'lensops', key.encode(), 'sha256').hexdigest()[:16]}"  # never the key itself
    forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
    return f"addr:{forwarded or address or 'unknown'}"
