"""Where the CPU time goes: per-process CPU seconds from /proc, grouped by role, over a window.

Ray names its worker processes after what they run (``ray::ServeReplica:lensops:Model``,
``ray::ProxyActor``...), so a snapshot before and after a load window tells how many CPU
milliseconds each Serve deployment, the Ray system processes, the baseline server and the load
generator spent per answered request. Linux only; elsewhere the snapshots are empty.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")

REPLICA = re.compile(r"ServeReplica:[^:\s]+:(\w+)")
ROLES = (
    ("ProxyActor", "Serve HTTP proxy"),
    ("haproxy", "HAProxy (Serve's HTTP front)"),
    ("ServeController", "Serve controller"),
    ("_fastapi_baseline.py", "FastAPI server"),
)


@dataclass(frozen=True)
class Snapshot:
    per_pid: dict[int, tuple[str, float]]
    """pid -> (command line, CPU seconds so far)."""
    busy_s: float
    """Machine-wide busy CPU seconds (all cores) from /proc/stat."""


def snapshot() -> Snapshot:
    per_pid = {}
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        per_pid[int(entry.name)] = (cmdline, (int(fields[11]) + int(fields[12])) / TICKS)
    return Snapshot(per_pid, _busy_s())


def _busy_s() -> float:
    try:
        values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS


def role_of(cmdline: str, pid: int) -> str:
    if pid == os.getpid():
        return "load generator (this process)"
    if replica := REPLICA.search(cmdline):
        return f"Serve {replica.group(1)} replicas"
    for marker, role in ROLES:
        if marker in cmdline:
            return role
    if "ray" in cmdline:
        return "Ray system (raylet, GCS, dashboard, workers)"
    return "other processes"


def cpu_by_role(before: Snapshot, after: Snapshot, role: Callable[[str, int], str] = role_of) -> dict[str, float]:
    """CPU seconds spent between the snapshots per role, plus ``machine busy`` (all processes)."""
    spent: dict[str, float] = defaultdict(float)
    for pid, (cmdline, seconds) in after.per_pid.items():
        start = before.per_pid.get(pid, (cmdline, 0.0))[1]
        spent[role(cmdline, pid)] += max(seconds - start, 0.0)
    spent["machine busy"] = after.busy_s - before.busy_s
    return dict(spent)


def replica_processes(deployment: str) -> list[int]:
    """Process ids of the running replicas of a Serve deployment (by Ray's process title)."""
    found = []
    for pid, (cmdline, _) in snapshot().per_pid.items():
        replica = REPLICA.search(cmdline)
        if replica and replica.group(1) == deployment and cmdline.startswith("ray::"):
            found.append(pid)
    return sorted(found)


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MiB (nan once it is gone)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return float("nan")
    (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024
