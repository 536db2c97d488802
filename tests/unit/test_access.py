"""API keys, CORS and the per-client rate limit of the service, without a service."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from lensops.config import ServeConfig
from lensops.serving.access import (
    Access,
    TokenBucket,
    check_reload_token,
    client_of,
    load_api_keys,
    presented_key,
)
from lensops.serving.errors import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_come_from_the_variable_and_the_file_and_blanks_are_ignored(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("from-file\n\n  second-file-key \n")
    cfg = ServeConfig(api_keys_env="KEYS", api_keys_file=str(keys))

    assert load_api_keys(cfg, {"KEYS": " a-key, ,another "}) == {"a-key", "another", "from-file", "second-file-key"}


def test_no_keys_means_every_request_is_let_through() -> None:
    Access(ServeConfig(), frozenset()).check_key({})


@pytest.mark.parametrize("headers", [{"x-api-key": "old"}, {"authorization": "Bearer new"}])
def test_any_of_several_keys_is_accepted_as_header_or_bearer_token(headers: dict[str, str]) -> None:
    Access(ServeConfig(), frozenset({"old", "new"})).check_key(headers)


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer "}, {"x-api-key": "ol"}])
def test_a_missing_or_wrong_key_is_unauthorized_401_and_the_answer_never_names_a_key(headers: dict[str, str]) -> None:
    with pytest.raises(ApiError) as caught:
        Access(ServeConfig(), frozenset({"old", "new"})).check_key(headers)

    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)
    assert "old" not in caught.value.detail and "new" not in caught.value.detail


def test_the_presented_key_prefers_the_api_key_header() -> None:
    assert presented_key({"x-api-key": "a", "authorization": "Bearer b"}) == "a"
    assert presented_key({"authorization": "Bearer b"}) == "b"


def test_a_client_is_its_key_hashed_never_the_key_itself_else_its_forwarded_address() -> None:
    keyed = client_of({"x-api-key": "secret-key"}, "10.0.0.9")
    assert keyed.startswith("key:") and "secret-key" not in keyed
    assert keyed == client_of({"authorization": "Bearer secret-key"}, "127.0.0.1")
    assert client_of({"x-forwarded-for": "203.0.113.7, 10.0.0.1"}, "127.0.0.1") == "addr:203.0.113.7"
    assert client_of({}, "127.0.0.1") == "addr:127.0.0.1"


def test_a_token_bucket_allows_its_burst_then_one_request_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)

    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_a_token_bucket_never_saves_more_than_its_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    bucket.take(0.0)

    assert [bucket.take(1000.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_without_a_rate_limit_nobody_is_limited() -> None:
    access = Access(ServeConfig(), frozenset())

    for _ in range(1000):
        access.admit("addr:1.2.3.4")


def test_past_the_rate_a_client_gets_429_with_the_seconds_to_wait_and_others_are_not_held_up() -> None:
    clock = Clock()
    access = Access(ServeConfig(rate_limit_per_s=1.0, rate_limit_burst=2), frozenset(), clock)
    access.admit("addr:a")
    access.admit("addr:a")

    with pytest.raises(ApiError) as caught:
        access.admit("addr:a")
    access.admit("addr:b")
    clock.now += 1.0
    access.admit("addr:a")

    assert (caught.value.code, caught.value.status) == ("rate_limited", 429)
    assert caught.value.headers() == {"Retry-After": "1"}


def test_the_rate_limiter_forgets_the_least_recent_client_past_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lensops.serving.access.MAX_CLIENTS", 3)
    access = Access(ServeConfig(rate_limit_per_s=1.0), frozenset(), Clock())
    for client in ("a", "b", "c", "a", "d"):
        access.admit(client)

    assert list(access.buckets) == ["c", "a", "d"]


def test_cors_headers_only_for_an_allowed_origin() -> None:
    access = Access(ServeConfig(cors_origins=["https://app.example"]), frozenset())

    assert access.cors_headers("https://evil.example") == {}
    assert access.cors_headers(None) == {}
    headers = access.cors_headers("https://app.example")
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-API-Key" in headers["Access-Control-Allow-Headers"] and headers["Vary"] == "Origin"


def test_no_cors_origins_means_no_cors_headers_and_a_star_allows_every_origin() -> None:
    assert Access(ServeConfig(), frozenset()).cors_headers("https://app.example") == {}
    wildcard = Access(ServeConfig(cors_origins=["*"]), frozenset()).cors_headers("https://x.example")
    assert wildcard["Access-Control-Allow-Origin"] == "*"


def test_an_error_with_retry_after_pickles_and_gives_whole_seconds() -> None:
    error = pickle.loads(pickle.dumps(ApiError("overloaded", "queue full", retry_after=0.2)))

    assert (error.code, error.detail, error.retry_after, error.status) == ("overloaded", "queue full", 0.2, 503)
    assert error.headers() == {"Retry-After": "1"}
    assert ApiError("too_small", "x").headers() == {}


def test_reloads_are_disabled_without_a_token_and_need_the_exact_one_when_set() -> None:
    with pytest.raises(ApiError, match="reload_disabled"):
        check_reload_token({"authorization": "Bearer x"}, "TOKEN", {})
    with pytest.raises(ApiError, match="unauthorized"):
        check_reload_token({"authorization": "Bearer wrong"}, "TOKEN", {"TOKEN": "right"})
    check_reload_token({"authorization": "Bearer right"}, "TOKEN", {"TOKEN": "right"})
