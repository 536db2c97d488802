"""Connecting to Ray: a local instance by default, a cluster with ``--address``/``RAY_ADDRESS``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    else:  # "local": never attach silently to whatever cluster this machine last started
        ray.init(address="local", num_cpus=(os.cpu_count() or 1) + DATA_CPU_HEADROOM)


def ensure_head(dashboard_port: int = 8265, metrics_port: int = 8080) -> str:
    """The address of this machine's running Ray, starting a detached head (``ray start
    --head``) if there is none; it outlives this process, so a Serve application deployed on
    it keeps running until ``ray stop``."""
    ray_cli = Path(sys.executable).with_name("ray")
    if subprocess.run([str(ray_cli), "status"], capture_output=True).returncode == 0:
        return "auto"
    subprocess.run(
        [
            str(ray_cli),
            "start",
            "--head",
            f"--num-cpus={(os.cpu_count() or 1) + DATA_CPU_HEADROOM}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--metrics-export-port={metrics_port}",
            "--disable-usage-stats",
        ],
        check=True,
    )
    return "auto"
