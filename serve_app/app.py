"""Application builder for ``serve run`` and ``serve deploy``.

``args`` (from ``serve_config.yaml`` or ``serve run serve_app:build_app config=...``):
``config`` (a lensops YAML file) and ``overrides`` (a list of ``section.key=value``).
"""

from __future__ import annotations

from typing import Any

from ray import serve

from lensops.config import load_config
from lensops.serving.app import build


def build_app(args: dict[str, Any]) -> serve.Application:
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    return build(load_config(args.get("config"), overrides))
