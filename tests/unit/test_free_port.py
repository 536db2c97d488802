"""The ports lensops hands to servers that bind them later (HAProxy's stats, Serve's HTTP)."""

from __future__ import annotations

import socket

import pytest

from lensops import runtime
from lensops.runtime import RAY_WORKER_PORTS_END, first_ephemeral_port, free_port


def test_a_free_port_lies_outside_the_ephemeral_range_and_ray_worker_ports() -> None:
    low = first_ephemeral_port()
    ports = {free_port() for _ in range(20)}
    assert all(RAY_WORKER_PORTS_END < port < low for port in ports), (ports, low)
    assert len(ports) > 1  # drawn at random: two clusters started together rarely collide


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        taken = held.getsockname()[1]
        monkeypatch.setattr(runtime.random, "sample", lambda ports, k: [taken, taken + 1])
        assert free_port() == taken + 1
