"""Hot swap under load: the lensops Serve application in a steady window vs while the champion moves.

Two differently initialised models are registered (``champion`` on the first). Under a steady
closed loop of ``--concurrency`` clients, after ``--steady-s`` measured seconds the
``champion`` alias moves to the second version and ``POST /reload-model`` swaps it (the model
tier loads and warms the new version while it keeps answering with the old one). The swap window
runs from the alias move until ``--after-s`` seconds after the reload answered. The table
compares that window (lensops, during the swap) with the steady window before it (baseline).

    .venv/bin/python benchmarks/hot_swap.py --concurrency 16 --json hot_swap.json
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lensops.tracking import registry

from _common import (
    check_device,
    comparison,
    comparison_columns,
    console,
    encoded_images,
    parser,
    print_table,
    workspace,
    write_json,
)
from _load import LoadRun, run_load
from _serve_setup import (
    MODEL_NAME,
    RELOAD_TOKEN,
    Registered,
    add_model_args,
    model_spec,
    register_versions,
    serve_app,
    service_config,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    add_model_args(parsed)
    parsed.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parsed.add_argument("--warmup-s", type=float, default=5.0, help="unmeasured seconds first")
    parsed.add_argument("--steady-s", type=float, default=20.0, help="measured steady seconds before the swap")
    parsed.add_argument("--after-s", type=float, default=10.0, help="seconds after the reload answered")
    parsed.add_argument("--images", type=int, default=32, help="distinct images the clients cycle through")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.concurrency, args.warmup_s, args.steady_s, args.after_s, args.images = 4, 1.0, 3.0, 2.0, 8
    return args


@dataclass
class Swap:
    """Moves the alias and asks the service to reload; records when and what it answered."""

    url: str
    registered: Registered
    steady_s: float
    after_s: float
    started: float = 0.0
    answered: float = 0.0
    reply: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, run: LoadRun) -> None:
        await asyncio.sleep(self.steady_s)
        self.started = time.monotonic()
        new = self.registered.versions[-1]
        await asyncio.to_thread(registry.set_alias, self.registered.uri, MODEL_NAME, registry.CHAMPION, new)
        headers = {"Authorization": f"Bearer {RELOAD_TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/reload-model", headers=headers) as response,
        ):
            self.reply = {"status": response.status, **await response.json(content_type=None)}
        self.answered = time.monotonic()
        run.measure_to = max(run.measure_to, self.answered + self.after_s)  # keep the clients going


def windows(run: LoadRun, swap: Swap, after_s: float) -> dict[str, dict[str, Any]]:
    """The steady window before the alias moved and the swap window after it, with the versions
    that answered (the swap window's count runs to the end of the load)."""
    steady = run.summary(run.measure_from, swap.started) | {"versions": _versions(run, run.measure_from, swap.started)}
    during = run.summary(swap.started, swap.answered + after_s)
    during |= {"versions": _versions(run, swap.started, run.measure_to), "swap_s": swap.answered - swap.started}
    return {"steady": steady, "swap": during}


def _versions(run: LoadRun, start: float, end: float) -> dict[str, int]:
    return dict(sorted(Counter(s.version for s in run.window(start, end) if s.ok).items()))


def measure(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], Swap]:
    images = encoded_images(args.images, args.source_size)
    spec = model_spec(args.arch, args.weights, args.image_size)
    with workspace() as work:
        registered = register_versions(work, spec, count=2)
        with serve_app(service_config(registered.uri, args)) as url:
            swap = Swap(url, registered, args.steady_s, args.after_s)
            duration = args.steady_s + args.after_s
            run = run_load(url, images, args.concurrency, duration, args.warmup_s, during=swap)
    return windows(run, swap, args.after_s), swap


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    results, swap = measure(args)
    steady, during = results["steady"], results["swap"]
    console.print(f"reload answered {swap.reply} after {during['swap_s']:.2f} s")
    console.print(f"answers by version: steady {steady['versions']}, from the swap on {during['versions']}")
    metrics = [
        ("img/s", "img_per_s"),
        ("p50 ms", "p50_ms"),
        ("p95 ms", "p95_ms"),
        ("p99 ms", "p99_ms"),
        ("requests", "requests"),
        ("failed requests", "errors"),
    ]
    table = comparison(during, steady, metrics)
    title = f"hot swap: {args.concurrency} clients, {args.arch} at {args.image_size} px, {args.device}"
    columns = comparison_columns("during swap (lensops)", "steady (baseline)")
    note = f"swap window: alias move -> reload answered ({during['swap_s']:.1f} s) + {args.after_s:g} s"
    print_table(title, columns, table, note=note)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    payload = {"rows": table, "steady": steady, "swap": during, "reload": swap.reply}
    write_json(args.json, "hot_swap", args.device, settings, payload)


if __name__ == "__main__":
    main()
