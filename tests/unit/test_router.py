"""The service's routing rules: who answers, who shadows, when versions move, and the service's health."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from factories import model_spec

from lensops.config import ServeConfig
from lensops.model.artifact import ModelSpec
from lensops.serving import following
from lensops.serving.errors import ApiError
from lensops.serving.following import Health
from lensops.serving.router import Route, Router
from lensops.tracking.registry import RegisteredVersion

MODEL = "lens"


@dataclass
class FakeRegistry:
    """An in-memory registry and model tier: aliases name versions, some versions cannot load."""

    aliases: dict[str, str] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)
    """Versions that exist without an alias (reachable by number)."""
    broken: set[str] = field(default_factory=set)
    """Versions whose weights cannot load: ``warm`` raises."""
    unreachable: bool = False
    spec: ModelSpec = field(default_factory=lambda: model_spec(classes=["clean", "dusty"]))
    on_warm: Callable[[str], None] | None = None
    warmed: list[str] = field(default_factory=list)
    log: list[tuple[str, ...]] = field(default_factory=list)

    async def find(self, ref: str) -> RegisteredVersion | None:
        if self.unreachable:
            raise ConnectionError("registry at http://mlflow:5000 is unreachable")
        version = self.aliases.get(ref) or (ref if ref in self.versions else None)
        if version is None:
            return None
        return RegisteredVersion(name=MODEL, version=version, run_id=f"run-{version}", source=f"s3://m/{version}")

    async def load_spec(self, found: RegisteredVersion) -> ModelSpec:
        return self.spec

    async def warm(self, version: str) -> None:
        self.log.append(("warm", version))
        if self.on_warm is not None:
            self.on_warm(version)
        if version in self.broken:
            raise RuntimeError(f"weights of version {version} are corrupt")
        self.warmed.append(version)


@dataclass
class RecordingEvents:
    log: list[tuple[str, ...]]
    activated: list[tuple[str, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    shadows: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def active(self, version: str, challenger: str | None) -> None:
        self.activated.append((version, challenger))
        self.log.append(("active", version))

    def refresh_failed(self, code: str) -> None:
        self.failures.append(code)

    def shadowed(self, version: str, champion_version: str, agrees: bool | None) -> None:
        self.shadows.append((version, champion_version, agrees))


def make_router(registry: FakeRegistry, seed: int = 0, **serve: object) -> tuple[Router, RecordingEvents]:
    events = RecordingEvents(log=registry.log)
    return Router(ServeConfig(**serve), MODEL, registry, events, rng=random.Random(seed)), events


def refresh(router: Router) -> str:
    return asyncio.run(router.refresh())


def refresh_error(router: Router) -> ApiError:
    with pytest.raises(ApiError) as info:
        refresh(router)
    return info.value


def answering(router: Router, times: int = 20) -> set[str]:
    return {router.route().answer.version for _ in range(times)}


@pytest.fixture
def serve_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Warnings of the ``ray.serve`` logger, the router's (pytest also captures non-propagating loggers)."""
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        yield caplog


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


# --- before any version ------------------------------------------------------------------


def test_before_any_refresh_route_raises_model_unavailable() -> None:
    router, _ = make_router(FakeRegistry(aliases={"champion": "1"}))

    with pytest.raises(ApiError) as info:
        router.route()

    assert info.value.code == "model_unavailable"
    assert info.value.status == 503
    assert info.value.detail == "waiting for 'champion' of model 'lens'"


def test_before_any_refresh_health_is_unavailable_naming_the_alias_and_model() -> None:
    router, _ = make_router(FakeRegistry(aliases={"champion": "1"}))

    assert router.health() == Health("unavailable", reason="waiting for 'champion' of model 'lens'")
    assert router.health().as_dict() == {"status": "unavailable", "reason": "waiting for 'champion' of model 'lens'"}
    assert router.challenger_info() is None


def test_a_first_refresh_loads_the_champion_and_health_is_ok() -> None:
    registry = FakeRegistry(aliases={"champion": "1"})
    router, events = make_router(registry)

    assert refresh(router) == "1"

    assert router.health() == Health("ok", "1")
    assert router.health().as_dict() == {"status": "ok", "version": "1"}
    route = router.route()
    assert (route.answer.version, route.answer.run_id, route.answer.alias) == ("1", "run-1", "champion")
    assert route.shadow is None
    assert registry.warmed == ["1"]
    assert events.activated == [("1", None)]


# --- challenger modes ---------------------------------------------------------------------


def test_challenger_mode_off_always_answers_with_the_champion_and_never_warms_the_challenger() -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "2"})
    router, events = make_router(registry, challenger_mode="off", canary_percent=100)
    refresh(router)

    routes = [router.route() for _ in range(50)]

    assert {r.answer.version for r in routes} == {"1"}
    assert all(r.shadow is None for r in routes)
    assert registry.warmed == ["1"]
    assert router.challenger_info() is None
    assert events.activated == [("1", None)]


def test_canary_sends_about_canary_percent_of_images_to_the_challenger() -> None:
    router, events = make_router(
        FakeRegistry(aliases={"champion": "1", "challenger": "2"}), seed=7, challenger_mode="canary", canary_percent=30
    )
    refresh(router)

    routes = [router.route() for _ in range(2000)]

    share = sum(r.answer.version == "2" for r in routes) / len(routes)
    assert abs(share - 0.30) <= 0.03
    assert {r.answer.version for r in routes} == {"1", "2"}
    assert all(r.shadow is None for r in routes)
    assert events.activated == [("1", "2")]


def test_canary_zero_percent_never_picks_the_challenger() -> None:
    router, _ = make_router(
        FakeRegistry(aliases={"champion": "1", "challenger": "2"}), challenger_mode="canary", canary_percent=0
    )
    refresh(router)

    assert answering(router, 1000) == {"1"}


def test_canary_hundred_percent_always_picks_the_challenger() -> None:
    router, _ = make_router(
        FakeRegistry(aliases={"champion": "1", "challenger": "2"}), challenger_mode="canary", canary_percent=100
    )
    refresh(router)

    assert answering(router, 1000) == {"2"}


def test_canary_answers_carry_the_alias_they_answer_as() -> None:
    router, _ = make_router(
        FakeRegistry(aliases={"champion": "1", "challenger": "2"}), seed=3, challenger_mode="canary", canary_percent=50
    )
    refresh(router)

    pairs = {(r.answer.version, r.answer.alias, r.answer.run_id) for r in (router.route() for _ in range(200))}

    assert pairs == {("1", "champion", "run-1"), ("2", "challenger", "run-2")}


def test_canary_challenger_info_shows_version_alias_mode_and_percent() -> None:
    router, _ = make_router(
        FakeRegistry(aliases={"champion": "1", "challenger": "2"}), challenger_mode="canary", canary_percent=25
    )
    refresh(router)

    assert router.challenger_info() == {"version": "2", "alias": "challenger", "mode": "canary", "canary_percent": 25}


def test_shadow_the_champion_always_answers_and_the_challenger_shadows() -> None:
    router, events = make_router(FakeRegistry(aliases={"champion": "1", "challenger": "2"}), challenger_mode="shadow")
    refresh(router)

    routes = [router.route() for _ in range(100)]

    assert {(r.answer.version, r.answer.alias) for r in routes} == {("1", "champion")}
    assert {(r.shadow.version, r.shadow.alias) for r in routes if r.shadow} == {("2", "challenger")}
    assert all(r.shadow is not None for r in routes)
    assert events.activated == [("1", "2")]


def test_shadow_compare_tallies_agreement_and_errors_of_a_classifier() -> None:
    router, events = make_router(FakeRegistry(aliases={"champion": "1", "challenger": "2"}), challenger_mode="shadow")
    refresh(router)
    route = router.route()
    clean, dusty = {"prediction": "clean"}, {"prediction": "dusty"}

    results = [
        router.compare(route, clean, {"prediction": "clean", "confidence": 0.6}),
        router.compare(route, clean, dusty),
        router.compare(route, dusty, dusty),
        router.compare(route, clean, None),
    ]

    assert results == [True, False, True, None]
    assert events.shadows == [("2", "1", True), ("2", "1", False), ("2", "1", True), ("2", "1", None)]
    assert router.challenger_info() == {
        "version": "2",
        "alias": "challenger",
        "mode": "shadow",
        "canary_percent": 10.0,
        "shadow_answers": 3,
        "shadow_agreement": 2 / 3,
        "shadow_errors": 1,
    }


def test_shadow_challenger_info_before_any_comparison_has_no_agreement() -> None:
    router, _ = make_router(FakeRegistry(aliases={"champion": "1", "challenger": "2"}), challenger_mode="shadow")
    refresh(router)

    info = router.challenger_info()

    assert info is not None
    assert (info["shadow_answers"], info["shadow_agreement"], info["shadow_errors"]) == (0, None, 0)


def test_shadow_regression_agrees_within_five_percent_of_the_champion() -> None:
    router, _ = make_router(
        FakeRegistry(aliases={"champion": "1", "challenger": "2"}, spec=model_spec("regression")),
        challenger_mode="shadow",
    )
    refresh(router)
    route = router.route()
    champion = {"prediction": 10.0}

    results = [router.compare(route, champion, {"prediction": value}) for value in (10.0, 10.4, 9.6, 10.6, 9.4)]

    assert results == [True, True, True, False, False]
    info = router.challenger_info()
    assert info is not None
    assert (info["shadow_answers"], info["shadow_agreement"], info["shadow_errors"]) == (5, 3 / 5, 0)


def test_shadow_tallies_restart_when_the_challenger_moves() -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "2"})
    router, _ = make_router(registry, challenger_mode="shadow")
    refresh(router)
    router.compare(router.route(), {"prediction": "clean"}, {"prediction": "clean"})

    registry.aliases["challenger"] = "3"
    refresh(router)

    info = router.challenger_info()
    assert info is not None
    assert (info["version"], info["shadow_answers"], info["shadow_agreement"]) == ("3", 0, None)


# --- pinned version and moving aliases ----------------------------------------------------


def test_a_pinned_version_answers_with_no_alias_and_ignores_the_alias_moving() -> None:
    registry = FakeRegistry(aliases={"champion": "1"}, versions={"1", "2", "3"})
    router, events = make_router(registry, version="2")

    assert refresh(router) == "2"
    route = router.route()
    assert (route.answer.version, route.answer.alias) == ("2", None)

    registry.aliases["champion"] = "3"
    assert refresh(router) == "2"

    assert answering(router) == {"2"}
    assert registry.warmed == ["2"]
    assert events.activated == [("2", None), ("2", None)]


def test_when_the_alias_moves_refresh_returns_the_new_version_warmed_before_it_gets_traffic() -> None:
    registry = FakeRegistry(aliases={"champion": "1"})
    router, events = make_router(registry)
    refresh(router)
    answering_while_warming: list[tuple[str, str]] = []
    registry.on_warm = lambda version: answering_while_warming.append((version, router.route().answer.version))

    registry.aliases["champion"] = "2"
    assert refresh(router) == "2"

    assert answering_while_warming == [("2", "1")]
    assert registry.log == [("warm", "1"), ("active", "1"), ("warm", "2"), ("active", "2")]
    assert events.activated == [("1", None), ("2", None)]
    assert answering(router) == {"2"}
    assert router.health() == Health("ok", "2")


def test_a_refresh_where_nothing_moved_does_not_warm_again() -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "2"})
    router, events = make_router(registry, challenger_mode="canary")
    refresh(router)
    first = router.champion

    assert refresh(router) == "1"

    assert registry.warmed == ["1", "2"]
    assert router.champion is first
    assert events.activated == [("1", "2"), ("1", "2")]


# --- no challenger ------------------------------------------------------------------------


def test_a_missing_challenger_alias_means_no_challenger() -> None:
    registry = FakeRegistry(aliases={"champion": "1"})
    router, events = make_router(registry, challenger_mode="shadow")
    refresh(router)

    route = router.route()
    assert route == Route(route.answer)
    assert route.shadow is None
    assert router.challenger_info() is None
    assert events.activated == [("1", None)]
    assert router.health() == Health("ok", "1")


def test_a_challenger_alias_on_the_champions_own_version_means_no_challenger() -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "1"})
    router, events = make_router(registry, challenger_mode="shadow")
    refresh(router)

    assert router.route().shadow is None
    assert router.challenger_info() is None
    assert registry.warmed == ["1"]
    assert events.activated == [("1", None)]


def test_a_challenger_alias_on_the_champions_own_version_in_canary_sends_everything_to_the_champion() -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "1"})
    router, _ = make_router(registry, challenger_mode="canary", canary_percent=100)
    refresh(router)

    assert {(r.answer.version, r.answer.alias) for r in (router.route() for _ in range(50))} == {("1", "champion")}


def test_a_challenger_that_cannot_load_leaves_the_champion_answering_and_is_counted_apart() -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "2"}, broken={"2"})
    router, events = make_router(registry, challenger_mode="canary", canary_percent=100)

    assert refresh(router) == "1"

    assert answering(router, 100) == {"1"}
    assert router.route().shadow is None
    assert router.challenger_info() is None
    assert router.health() == Health("ok", "1")
    assert events.failures == ["challenger_model_load_failed"]
    assert events.activated == [("1", None)]


def test_a_challenger_that_cannot_load_is_logged_once_naming_the_alias(serve_log: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry(aliases={"champion": "1", "challenger": "2"}, broken={"2"})
    router, _ = make_router(registry, challenger_mode="shadow")

    for _ in range(3):
        refresh(router)

    assert warnings_of(serve_log, "challenger") == [
        "challenger 'challenger' of 'lens' not loaded; "
        "model_load_failed: version 2 of 'lens' cannot load: weights of version 2 are corrupt"
    ]


# --- failures and health ------------------------------------------------------------------


def test_a_new_version_that_cannot_load_degrades_health_and_the_old_version_keeps_answering() -> None:
    registry = FakeRegistry(aliases={"champion": "1"}, broken={"2"})
    router, events = make_router(registry)
    refresh(router)

    registry.aliases["champion"] = "2"
    error = refresh_error(router)

    assert (error.code, error.status) == ("model_load_failed", 502)
    assert error.detail == "version 2 of 'lens' cannot load: weights of version 2 are corrupt"
    assert answering(router) == {"1"}
    health = router.health()
    assert (health.status, health.version) == ("degraded", "1")
    assert health.reason is not None
    assert "model_load_failed" in health.reason
    assert events.failures == ["model_load_failed"]
    assert events.activated == [("1", None)]


def test_a_later_successful_refresh_makes_health_ok_again() -> None:
    registry = FakeRegistry(aliases={"champion": "1"}, broken={"2"})
    router, events = make_router(registry)
    refresh(router)
    registry.aliases["champion"] = "2"
    refresh_error(router)

    registry.broken.clear()
    assert refresh(router) == "2"

    assert router.health() == Health("ok", "2")
    assert router.problem is None
    assert answering(router) == {"2"}
    assert events.activated == [("1", None), ("2", None)]


def test_a_registry_unreachable_after_start_up_degrades_and_the_old_version_keeps_answering() -> None:
    registry = FakeRegistry(aliases={"champion": "1"})
    router, events = make_router(registry)
    refresh(router)

    registry.unreachable = True
    error = refresh_error(router)

    assert (error.code, error.status) == ("registry_unavailable", 503)
    assert error.detail == "cannot read 'champion' of 'lens': registry at http://mlflow:5000 is unreachable"
    assert router.health() == Health("degraded", "1", f"registry_unavailable: {error.detail}")
    assert answering(router) == {"1"}
    assert events.failures == ["registry_unavailable"]


def test_a_registry_unreachable_before_any_version_loaded_makes_health_unavailable_with_that_reason() -> None:
    router, events = make_router(FakeRegistry(aliases={"champion": "1"}, unreachable=True))

    error = refresh_error(router)

    reason = f"registry_unavailable: {error.detail}"
    assert router.health() == Health("unavailable", reason=reason)
    with pytest.raises(ApiError) as info:
        router.route()
    assert (info.value.code, info.value.detail) == ("model_unavailable", reason)
    assert events.failures == ["registry_unavailable"]


def test_a_missing_alias_is_no_such_version() -> None:
    router, events = make_router(FakeRegistry(aliases={"staging": "1"}))

    error = refresh_error(router)

    assert (error.code, error.status) == ("no_such_version", 404)
    assert error.detail == "registered model 'lens' has no version or alias 'champion'"
    assert router.health().status == "unavailable"
    assert events.failures == ["no_such_version"]


def test_a_pinned_version_that_does_not_exist_is_no_such_version() -> None:
    router, _ = make_router(FakeRegistry(aliases={"champion": "1"}, versions={"1"}), version="9")

    error = refresh_error(router)

    assert error.code == "no_such_version"
    assert error.detail == "registered model 'lens' has no version or alias '9'"


def test_a_failure_is_logged_once_per_distinct_reason(serve_log: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry()
    router, events = make_router(registry)

    for _ in range(3):
        refresh_error(router)
    assert len(warnings_of(serve_log, "following")) == 1

    registry.unreachable = True
    refresh_error(router)

    assert warnings_of(serve_log, "following") == [
        "following 'champion' of 'lens' failed; no_such_version: registered model 'lens' has no version or alias "
        "'champion'",
        "following 'champion' of 'lens' failed; registry_unavailable: cannot read 'champion' of 'lens': "
        "registry at http://mlflow:5000 is unreachable",
    ]
    assert events.failures == ["no_such_version"] * 3 + ["registry_unavailable"]


def test_the_same_failure_after_a_recovery_is_logged_again(serve_log: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry(aliases={"champion": "1"})
    router, _ = make_router(registry)
    refresh(router)

    registry.unreachable = True
    refresh_error(router)
    registry.unreachable = False
    refresh(router)
    registry.unreachable = True
    refresh_error(router)

    assert len(warnings_of(serve_log, "following")) == 2


# --- watch --------------------------------------------------------------------------------


def test_watch_with_interval_zero_returns_after_the_first_successful_refresh() -> None:
    registry = FakeRegistry(aliases={"champion": "1"})
    router, events = make_router(registry, watch_interval_s=0)

    asyncio.run(asyncio.wait_for(router.watch(), timeout=5))

    assert router.health() == Health("ok", "1")
    assert events.activated == [("1", None)]


@pytest.mark.parametrize("published", [True, False])
def test_the_first_refresh_is_signalled_whatever_came_of_it(published: bool) -> None:
    registry = FakeRegistry(aliases={"champion": "1"} if published else {})
    router, _ = make_router(registry, watch_interval_s=60)

    async def main() -> None:
        watching = asyncio.get_running_loop().create_task(router.watch())
        await asyncio.wait_for(router.first_refresh_done.wait(), timeout=5)
        watching.cancel()

    asyncio.run(main())

    assert router.health().status == ("ok" if published else "unavailable")


def test_watch_with_interval_zero_retries_until_a_version_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "IDLE_POLL_S", 0.0)
    registry = FakeRegistry()
    router, events = make_router(registry, watch_interval_s=0)

    async def publish_later() -> None:
        while len(events.failures) < 2:
            await asyncio.sleep(0)
        registry.aliases["champion"] = "1"

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(router.watch(), publish_later()), timeout=5)

    asyncio.run(main())

    assert events.failures[:2] == ["no_such_version", "no_such_version"]
    assert events.activated == [("1", None)]
    assert router.health() == Health("ok", "1")


@pytest.mark.parametrize(("failures", "pause"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)])
def test_the_watch_waits_twice_as_long_after_each_failure_up_to_its_cap(failures: int, pause: float) -> None:
    router, _ = make_router(FakeRegistry(aliases={"champion": "1"}), watch_interval_s=1, watch_max_backoff_s=8)

    assert router.pause(failures) == pause


def test_the_answering_version_is_required_before_any_has_loaded() -> None:
    router, _ = make_router(FakeRegistry(aliases={"champion": "1"}))

    with pytest.raises(ApiError, match="model_unavailable"):
        router.require_champion()
    refresh(router)
    assert router.require_champion().version == "1"
