"""The function ``TorchTrainer`` ships to its workers.

Ray Train's controller unpickles it (by reference to this module) without calling it: the loop,
and torch and the network code with it, load on the workers alone (:mod:`lensops.training.loop`).
"""

from __future__ import annotations

from typing import Any


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One worker's share of the fit: :func:`lensops.training.loop.train_loop`."""
    from lensops.training.loop import train_loop

    train_loop(config)
