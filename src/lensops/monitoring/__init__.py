"""Monitoring: what models saw and said, and the truth about it, kept to compare over time.

``lensops.monitoring.read_predictions(log)`` reads the service's prediction log as a Ray
dataset (imported on first use, so the torch-side modules never load Ray through here).
"""

from __future__ import annotations

from typing import Any

__all__ = ["read_predictions"]


def __getattr__(name: str) -> Any:
    if name == "read_predictions":
        from lensops.monitoring.reading import read_predictions

        return read_predictions
    raise AttributeError(f"module 'lensops.monitoring' has no attribute {name!r}")
