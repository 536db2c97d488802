"""Which registered version answers each image: the service's routing rules, free of Ray and HTTP.

The :class:`Router` follows the aliases (:class:`~lensops.serving.following.AliasFollower`) and,
per image, decides who answers and who predicts in the shadow: the champion; in canary mode the
challenger for ``serve.canary_percent`` of the images; in shadow mode the champion answers and
the challenger predicts the same input, and the router tallies how often the two agree.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lensops.config import ServeConfig
from lensops.serving.following import Active, AliasFollower, Events, Versions


@dataclass(frozen=True)
class Route:
    """Who answers one image, and who predicts it in the shadow (if anyone)."""

    answer: Active
    shadow: Active | None = None


@dataclass
class ShadowTally:
    """Running summary of one challenger version shadowing one champion version."""

    answers: int = 0
    agreeing: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        agreement = self.agreeing / self.answers if self.answers else None
        return {"shadow_answers": self.answers, "shadow_agreement": agreement, "shadow_errors": self.errors}


class Router(AliasFollower):
    def __init__(
        self, cfg: ServeConfig, model_name: str, versions: Versions, events: Events, rng: random.Random | None = None
    ):
        super().__init__(cfg, model_name, versions, events)
        self.rng = rng or random.Random()
        self.tallies: dict[tuple[str, str], ShadowTally] = {}

    def route(self) -> Route:
        """Who answers the next image; ``model_unavailable`` before any version has loaded."""
        champion, challenger = self.require_champion(), self.challenger
        if challenger is None:
            return Route(champion)
        if self.cfg.challenger_mode == "shadow":
            return Route(champion, shadow=challenger)
        return Route(challenger if self.rng.random() * 100 < self.cfg.canary_percent else champion)

    def compare(self, route: Route, answer: Mapping[str, Any], shadow: Mapping[str, Any] | None) -> bool | None:
        """Tally the shadow prediction of a routed image (None: it failed); whether it agrees."""
        tally = self.tallies.setdefault((route.answer.version, route.shadow.version), ShadowTally())
        agrees = None if shadow is None else route.answer.spec.task.agrees(answer, shadow)
        if agrees is None:
            tally.errors += 1
        else:
            tally.answers += 1
            tally.agreeing += agrees
        self.events.shadowed(route.shadow.version, route.answer.version, agrees)
        return agrees

    def challenger_info(self) -> dict[str, Any] | None:
        champion, challenger = self.champion, self.challenger
        if champion is None or challenger is None:
            return None
        info = {
            "version": challenger.version,
            "alias": challenger.alias,
            "mode": self.cfg.challenger_mode,
            "canary_percent": self.cfg.canary_percent,
        }
        if self.cfg.challenger_mode == "shadow":
            info |= self.tallies.get((champion.version, challenger.version), ShadowTally()).as_dict()
        return info
