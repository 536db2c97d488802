"""Following the registry: which versions the service has loaded, and how healthy that is.

:class:`AliasFollower` follows the champion alias (or a pinned version) and, in canary or
shadow mode, the challenger alias, warming each new version before it gets traffic. It owns the
service's health: ``unavailable`` until a version has loaded, ``degraded`` while following fails
(registry unreachable, a new version that cannot load) and the loaded version keeps answering,
``ok`` otherwise. Free of Ray and HTTP: the registry and the model tier come in as ``Versions``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from lensops.config import ServeConfig
from lensops.serving.errors import ApiError

if TYPE_CHECKING:
    from lensops.model.artifact import ModelSpec
    from lensops.tracking.registry import RegisteredVersion

logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the replica's log file
IDLE_POLL_S = 2.0
"""How often a service with the watch turned off looks for its first version."""


@dataclass(frozen=True)
class Active:
    """A version the service routes to, under the alias it answers as (None when pinned)."""

    version: str
    run_id: str
    spec: ModelSpec
    alias: str | None


class Versions(Protocol):
    """Where the router reads versions and warms them (the registry and the model tier)."""

    async def find(self, ref: str) -> RegisteredVersion | None: ...

    async def load_spec(self, found: RegisteredVersion) -> ModelSpec: ...

    async def warm(self, version: str) -> None: ...


class Events(Protocol):
    """What the router reports as it goes (the service's metrics)."""

    def active(self, version: str, challenger: str | None) -> None: ...

    def refresh_failed(self, code: str) -> None: ...

    def shadowed(self, version: str, champion_version: str, agrees: bool | None) -> None: ...


@dataclass(frozen=True)
class Health:
    status: Literal["ok", "degraded", "unavailable"]
    version: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("status", self.status), ("version", self.version), ("reason", self.reason)) if v}


class AliasFollower:
    def __init__(self, cfg: ServeConfig, model_name: str, versions: Versions, events: Events):
        self.cfg, self.name, self.versions, self.events = cfg, model_name, versions, events
        self.champion: Active | None = None
        self.challenger: Active | None = None
        self.problem: str | None = None
        """Why the last refresh failed; None after a successful one."""
        self.challenger_problem: str | None = None
        """Why the challenger alias could not be followed last time; None when it could."""
        self._lock = asyncio.Lock()
        self.first_refresh_done = asyncio.Event()
        """Set once :meth:`watch` has tried a first time, whatever came of it."""

    @property
    def ref(self) -> str:
        return self.cfg.version or self.cfg.alias

    async def refresh(self) -> str:
        """Point at the versions the aliases name now, each warmed before it gets traffic.

        On failure the versions loaded before keep answering, and the error (an ``ApiError``
        with code ``no_such_version``, ``registry_unavailable`` or ``model_load_failed``) is
        raised, counted, logged once per distinct reason and shown by :meth:`health`."""
        async with self._lock:
            try:
                champion = await self._follow(self.ref, None if self.cfg.version else self.ref, self.champion)
                if champion is None:
                    missing = f"registered model '{self.name}' has no version or alias '{self.ref}'"
                    raise ApiError("no_such_version", missing)
                challenger = await self._follow_challenger(champion)
            except ApiError as exc:
                self._failed(exc)
                raise
            self.champion, self.challenger, self.problem = champion, challenger, None
            self.events.active(champion.version, challenger.version if challenger else None)
            return champion.version

    async def watch(self) -> None:
        """Refresh now, then every ``watch_interval_s`` (0: only until a version has loaded).

        After a failure the wait doubles, up to ``watch_max_backoff_s``: an unreachable registry
        is asked less and less often, and the first success restores the interval."""
        failures = 0
        while True:
            try:
                await self.refresh()
                failures = 0
            except ApiError:  # recorded by refresh; the loaded version keeps answering
                failures += 1
            self.first_refresh_done.set()
            if not self.cfg.watch_interval_s and self.champion is not None:
                return
            await asyncio.sleep(self.pause(failures))

    def pause(self, failures: int) -> float:
        """Seconds until the next refresh after ``failures`` failed ones in a row."""
        interval = self.cfg.watch_interval_s or IDLE_POLL_S
        return min(interval * 2 ** max(failures - 1, 0), max(interval, self.cfg.watch_max_backoff_s))

    async def _follow_challenger(self, champion: Active) -> Active | None:
        """None when the mode is off, or the alias is missing, unloadable or on the champion's version."""
        alias = self.cfg.challenger_alias
        if self.cfg.challenger_mode == "off":
            return None
        try:
            challenger = await self._follow(alias, alias, self.challenger, exclude=champion.version)
        except ApiError as exc:  # a broken challenger never holds up the champion
            reason = f"{exc.code}: {exc.detail}"
            if reason != self.challenger_problem:
                logger.warning("challenger '%s' of '%s' not loaded; %s", alias, self.name, reason)
            self.challenger_problem = reason
            self.events.refresh_failed(f"challenger_{exc.code}")
            return None
        self.challenger_problem = None
        return challenger

    async def _follow(
        self, ref: str, alias: str | None, current: Active | None, exclude: str | None = None
    ) -> Active | None:
        """The version ``ref`` names now, warmed (``current`` when it did not move); None when
        there is none or it is ``exclude``."""
        try:
            found = await self.versions.find(ref)
            if found is None or found.version == exclude:
                return None
            if current is not None and current.version == found.version:
                return current
            spec = await self.versions.load_spec(found)
        except Exception as exc:
            raise ApiError("registry_unavailable", f"cannot read '{ref}' of '{self.name}': {exc}") from exc
        try:
            await self.versions.warm(found.version)
        except Exception as exc:
            raise ApiError("model_load_failed", f"version {found.version} of '{self.name}' cannot load: {exc}") from exc
        return Active(version=found.version, run_id=found.run_id, spec=spec, alias=alias)

    def _failed(self, exc: ApiError) -> None:
        reason = f"{exc.code}: {exc.detail}"
        if reason != self.problem:
            logger.warning("following '%s' of '%s' failed; %s", self.ref, self.name, reason)
        self.problem = reason
        self.events.refresh_failed(exc.code)

    def require_champion(self) -> Active:
        """The version that answers; ``model_unavailable`` before any has loaded."""
        if self.champion is None:
            raise ApiError("model_unavailable", self.health().reason or "no model loaded")
        return self.champion

    def health(self) -> Health:
        if self.champion is None:
            return Health("unavailable", reason=self.problem or f"waiting for '{self.ref}' of model '{self.name}'")
        if self.problem:
            return Health("degraded", self.champion.version, self.problem)
        return Health("ok", self.champion.version)
