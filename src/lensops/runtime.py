"""Connecting to Ray: a local instance by default, a cluster with ``--address``/``RAY_ADDRESS``."""

from __future__ import annotations

import os

import ray

DATA_CPU_HEADROOM = 2
"""Logical CPUs a local Ray gets beyond the machine's cores: Ray Train workers hold one CPU
each for the whole fit, and Ray Data's decode/augment tasks still need slots beside them."""


def init_ray(address: str | None = None) -> None:
    """Join ``address`` or ``$RAY_ADDRESS``; otherwise start a local Ray. Idempotent."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        ray.init(num_cpus=(os.cpu_count() or 1) + DATA_CPU_HEADROOM)
