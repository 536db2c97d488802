"""A small closed-loop HTTP load generator (asyncio + aiohttp), loopback only.

``concurrency`` clients each POST one image (multipart field ``file``) to ``/predict``, wait
for the answer and send the next, until the deadline. Every request is recorded with its start
and end time, so any time window (warm-up excluded, or the seconds around a hot swap) can be
summarised afterwards. The loop is bounded in time and stops by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from _common import percentiles, ratio

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Sample:
    started: float
    finished: float
    ok: bool
    version: str = ""
    """The model version named in the answer (empty on failure)."""
    detail: str = ""


@dataclass
class LoadRun:
    """Every request of one closed-loop run, on the ``time.monotonic`` clock."""

    samples: list[Sample] = field(default_factory=list)
    measure_from: float = 0.0
    measure_to: float = 0.0

    def window(self, start: float, end: float) -> list[Sample]:
        """Requests that finished inside [start, end]."""
        return [s for s in self.samples if start <= s.finished <= end]

    def summary(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """img/s, latency percentiles (ms) and failures over a window (default: after warm-up)."""
        start = self.measure_from if start is None else start
        end = self.measure_to if end is None else end
        inside = self.window(start, end)
        ok = [s for s in inside if s.ok]
        latencies = [1000 * (s.finished - s.started) for s in ok]
        failed = [s.detail for s in inside if not s.ok]
        return {
            "img_per_s": ratio(len(ok), end - start),
            **{f"{k}_ms": v for k, v in percentiles(latencies).items()},
            "requests": len(inside),
            "errors": len(failed),
            "error_examples": sorted(set(failed))[:3],
        }


async def closed_loop(
    url: str,
    images: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    during: Callable[[LoadRun], Awaitable[Any]] | None = None,
) -> LoadRun:
    """Run ``concurrency`` clients for ``warmup_s + duration_s``; ``during`` (if given) runs
    concurrently, started with the run as soon as the warm-up ends (e.g. a hot swap); it may
    move ``run.measure_to`` later to keep the clients going."""
    if urlsplit(url).hostname not in LOOPBACK:
        raise ValueError(f"load is only sent to loopback addresses, not {url}")
    run = LoadRun()
    start = time.monotonic()
    run.measure_from, run.measure_to = start + warmup_s, start + warmup_s + duration_s
    images_cycle = itertools.cycle(enumerate(images))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clients = [_client(session, f"{url}/predict", images_cycle, run) for _ in range(concurrency)]
        extra = [_after(run.measure_from, during, run)] if during else []
        await asyncio.gather(*clients, *extra)
    return run


async def _client(session: aiohttp.ClientSession, url: str, images: Any, run: LoadRun) -> None:
    while time.monotonic() < run.measure_to:
        index, data = next(images)
        form = aiohttp.FormData()
        form.add_field("file", data, filename=f"image{index}.png", content_type="application/octet-stream")
        started = time.monotonic()
        try:
            async with session.post(url, data=form) as response:
                body = await response.json(content_type=None) if response.status == 200 else await response.text()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            run.samples.append(Sample(started, time.monotonic(), False, detail=f"{type(exc).__name__}: {exc}"[:200]))
            continue
        if ok:
            run.samples.append(Sample(started, time.monotonic(), True, version=str(body["model"]["version"])))
        else:
            run.samples.append(Sample(started, time.monotonic(), False, detail=f"{response.status} {body[:160]}"))


async def _after(at: float, action: Callable[[LoadRun], Awaitable[Any]], run: LoadRun) -> Any:
    await asyncio.sleep(max(at - time.monotonic(), 0.0))
    return await action(run)


def run_load(
    url: str,
    images: Sequence[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    during: Callable[[LoadRun], Awaitable[Any]] | None = None,
) -> LoadRun:
    """Synchronous wrapper of :func:`closed_loop`."""
    return asyncio.run(closed_loop(url, images, concurrency, duration_s, warmup_s, during))
