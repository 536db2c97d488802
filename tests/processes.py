"""Processes of the test's clusters and the TCP ports they listen on, read from /proc (Linux)."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

LISTEN = "0A"


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of ``pid`` in the LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    found = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == LISTEN and fields[9] in inodes:
                found.add(_address(fields[1]))
    return found


def _address(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` (little-endian words, as the kernel prints them) -> ("127.0.0.1", 8080)."""
    host, port = field.split(":")
    raw = bytes.fromhex(host)
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(packed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(port, 16)


def _processes() -> list[tuple[int, str, str]]:
    """(pid, command name, command line) of every process now."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "comm").read_text().strip(), (entry / "cmdline").read_text()))
            except OSError:  # ended meanwhile
                continue
    return found


def processes_named(name: str, with_argument: str = "") -> list[int]:
    """Processes whose command name is ``name`` and whose command line contains ``with_argument``."""
    return [pid for pid, comm, cmdline in _processes() if comm == name and with_argument in cmdline]


def replica_pids(app: str, deployment: str) -> list[int]:
    """Processes of a Serve deployment's replicas (Ray titles them ``ray::ServeReplica:app:deployment``)."""
    title = f"ray::ServeReplica:{app}:{deployment}"
    return sorted(pid for pid, _, cmdline in _processes() if cmdline.split("\0")[0].strip() == title)


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of ``pid`` so far, in clock ticks (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])


def busiest(pids: list[int], window_s: float = 0.5) -> int:
    """The one of ``pids`` that used the most CPU over the next ``window_s`` seconds."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    time.sleep(window_s)
    return max(pids, key=lambda pid: cpu_ticks(pid) - before[pid])
