"""Soak: minutes of bounded closed-loop load on loopback, a replica killed every minute.

The lensops Serve application runs two replicas of every tier. The first minute is the warm-up
(nothing is killed); from the second on, at the start of each minute one replica of the next
tier in turn (Preprocessor, Model, Ingress, ...) is killed with SIGKILL, by process id, and Serve
replaces it. The table gives requests, failed requests and p99 latency per minute, and each
replica's resident memory at the start of every minute after the warm-up and at the end (for
the replicas that lived throughout: neither killed nor started later).

    .venv/bin/python benchmarks/soak.py --minutes 5 --concurrency 4 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from typing import Any

from _common import (
    Column,
    check_device,
    console,
    encoded_images,
    parser,
    percentiles,
    print_table,
    workspace,
    write_json,
)
from _cpu import replica_processes, resident_mb
from _load import LoadRun, run_load
from _serve_setup import add_model_args, model_spec, register_versions, serve_app, service_config

TIERS = ("Preprocessor", "Model", "Ingress")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    add_model_args(parsed)
    parsed.add_argument("--minutes", type=float, default=5.0, help="length of the run, warm-up minute included")
    parsed.add_argument("--period-s", type=float, default=60.0, help="one kill per period (a 'minute')")
    parsed.add_argument("--concurrency", type=int, default=4, help="closed-loop clients")
    parsed.add_argument("--images", type=int, default=16, help="distinct images the clients cycle through")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.minutes, args.period_s, args.concurrency, args.images = 1.0, 15.0, 2, 4
    return args


class Killer:
    """From the second period on, kills one replica of the next tier at each period's start: one
    that replaced an earlier victim when there is one, else one of those there since the warm-up."""

    def __init__(self, period_s: float, periods: int):
        self.period_s, self.periods = period_s, periods
        self.kills: list[dict[str, Any]] = []
        self.memory: list[dict[int, tuple[str, float]]] = []
        """Resident memory of every replica at the start of each period after the warm-up."""

    @property
    def memory_start(self) -> dict[int, tuple[str, float]]:
        return self.memory[0] if self.memory else {}

    async def __call__(self, run: LoadRun) -> None:
        await asyncio.sleep(self.period_s)
        for period in range(1, self.periods):
            self.memory.append(_memory())
            tier = TIERS[(period - 1) % len(TIERS)]
            replicas = replica_processes(tier)
            # a replacement when there is one, so that a replica of every tier lives throughout
            victim = ([pid for pid in replicas if pid not in self.memory_start] or replicas)[0]
            os.kill(victim, signal.SIGKILL)
            self.kills.append({"period": period, "tier": tier, "pid": victim, "at": time.monotonic()})
            console.print(f"period {period + 1}: killed {tier} replica {victim}")
            await asyncio.sleep(self.period_s)


def _memory() -> dict[int, tuple[str, float]]:
    return {pid: (tier, resident_mb(pid)) for tier in TIERS for pid in replica_processes(tier)}


def survivors(samples: list[dict[int, tuple[str, float]]]) -> list[dict[str, Any]]:
    """A row per replica in every sample: its resident MiB in each, and its growth over them."""
    rows = []
    for pid, (tier, _) in samples[0].items():
        if all(pid in sample for sample in samples):
            sizes = [sample[pid][1] for sample in samples]
            by_period = {f"p{i + 2}": mb for i, mb in enumerate(sizes[:-1])}
            rows.append({"tier": tier, "pid": pid, **by_period, "end": sizes[-1], "growth": sizes[-1] / sizes[0] - 1})
    return rows


def periods(run: LoadRun, period_s: float, count: int) -> list[dict[str, Any]]:
    rows = []
    for index in range(count):
        start = run.measure_from + index * period_s
        inside = run.window(start, start + period_s)
        latencies = [1000 * (s.finished - s.started) for s in inside if s.ok]
        rows.append(
            {
                "period": index + 1,
                "requests": len(inside),
                "failed": sum(not s.ok for s in inside),
                "p99_ms": percentiles(latencies, (99,))["p99"],
                "failures": sorted({s.detail for s in inside if not s.ok})[:3],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    count = max(2, round(args.minutes * 60 / args.period_s))
    killer = Killer(args.period_s, count)
    images = encoded_images(args.images, args.source_size)
    with workspace() as work:
        registered = register_versions(work, model_spec(args.arch, args.weights, args.image_size), count=1)
        cfg = service_config(registered.uri, args)
        cfg.serve.min_replicas = cfg.serve.max_replicas = 2
        cfg.serve.ingress_min_replicas = cfg.serve.ingress_max_replicas = 2
        with serve_app(cfg) as url:
            run = run_load(url, images, args.concurrency, count * args.period_s, during=killer)
            memory_end = _memory()
    rows = periods(run, args.period_s, count)
    for row, kill in zip(rows[1:], killer.kills, strict=False):
        row["killed"] = kill["tier"]
    columns = [
        Column("period", "period", "d"),
        Column("killed", "replica killed", ""),
        Column("requests", "requests", "d"),
        Column("failed", "failed", "d"),
        Column("p99_ms", "p99 ms", ".0f"),
    ]
    title = f"soak: {args.concurrency} clients, {count} periods of {args.period_s:g} s, two replicas per tier"
    print_table(title, columns, [{"killed": "-", **r} for r in rows])
    memory = survivors([*killer.memory, memory_end])
    memory_columns = [
        Column("tier", "replica", ""),
        Column("pid", "pid", "d"),
        *(Column(f"p{i + 2}", f"period {i + 2} MiB", ".0f") for i in range(len(killer.memory))),
        Column("end", "end MiB", ".0f"),
        Column("growth", "growth", ".1%"),
    ]
    title = "resident memory of the replicas alive from the warm-up to the end, at the start of each period"
    print_table(title, memory_columns, memory)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    write_json(args.json, "soak", args.device, settings, {"periods": rows, "kills": killer.kills, "memory": memory})


if __name__ == "__main__":
    main()
