"""Online inference: the lensops Ray Serve application vs a plain FastAPI + torch server vs the
raw batched forward pass, under the same closed-loop HTTP load, in one run.

1. An untrained model (``--arch`` backbone with its pretrained weights, fresh head) is saved
   with lensops.model.artifact and registered as ``champion`` in a temporary sqlite MLflow store.
2. raw: batches of ``--max-batch-size`` preprocessed images through the model in this process
   with ``--threads`` torch threads (default: all cores): the throughput ceiling.
3. FastAPI: ``_fastapi_baseline.py`` in a subprocess (same preprocessing and answer, one
   forward pass per request, ``--threads`` torch threads) under each concurrency.
4. lensops: a local Ray (lensops.runtime.init_ray) and the Serve application
   (lensops.serving.app.run_local) under the same load.

Baselines run before Ray starts, so they have the machine to themselves.

    .venv/bin/python benchmarks/serving.py --concurrency 1,4,16,64 --json serving.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensops.model import artifact
from lensops.model.preprocess import normalizer, to_uint8

from _common import (
    Column,
    check_device,
    console,
    encoded_images,
    parser,
    print_table,
    ratio,
    set_torch_threads,
    workspace,
)
from _common import write_json as save_json
from _cpu import Snapshot, cpu_by_role, snapshot
from _load import LoadRun, run_load
from _serve_setup import (
    add_model_args,
    fastapi_server,
    model_spec,
    register_versions,
    replica_counts,
    serve_app,
    service_config,
)

SIDES = ("lensops", "fastapi")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    add_model_args(parsed)
    parsed.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts")
    parsed.add_argument("--duration-s", type=float, default=20.0, help="measured seconds per concurrency")
    parsed.add_argument("--warmup-s", type=float, default=5.0, help="unmeasured seconds before each")
    parsed.add_argument("--images", type=int, default=32, help="distinct images the clients cycle through")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.concurrency, args.duration_s, args.warmup_s, args.images = "1,8", 2.0, 1.0, 8
    args.levels = [int(c) for c in args.concurrency.split(",")]
    return args


def raw_forward(model_dir: Path, images: list[bytes], batch_size: int, device: str, duration_s: float) -> dict:
    """Images/s of the bare forward pass on already normalised batches of ``batch_size``."""
    model, spec = artifact.load(model_dir, device)
    uint8 = np.stack([to_uint8(images[i % len(images)], spec.preprocess) for i in range(batch_size)])
    batch = normalizer(spec.preprocess)(torch.from_numpy(uint8).to(device))
    if device == "cuda":
        model, batch = model.to(memory_format=torch.channels_last), batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(batch)
        batches, started = 0, time.perf_counter()
        while time.perf_counter() - started < duration_s or batches < 3:
            model(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            batches += 1
        elapsed = time.perf_counter() - started
    return {"img_per_s": batches * batch_size / elapsed, "batch_ms": 1000 * elapsed / batches}


def load_levels(url: str, images: list[bytes], args: argparse.Namespace, label: str) -> dict[int, dict[str, Any]]:
    results = {}
    for level in args.levels:
        before = snapshot()
        run = run_load(url, images, level, args.duration_s, args.warmup_s)
        results[level] = run.summary() | {"cpu": cpu_per_request(run, before, snapshot())}
        if label == "lensops":
            results[level]["replicas"] = replica_counts()
        console.print(f"{label:>8} c={level:<3} {_brief(results[level])}")
    return results


def cpu_per_request(run: LoadRun, before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU ms per answered request by role over the whole run (warm-up included), and how many
    cores the machine kept busy on average."""
    answered = max(sum(s.ok for s in run.samples), 1)
    wall_s = max(s.finished for s in run.samples) - min(s.started for s in run.samples) if run.samples else 1.0
    spent = cpu_by_role(before, after)
    busy = spent.pop("machine busy")
    per_request = {role: 1000 * seconds / answered for role, seconds in sorted(spent.items()) if seconds > 0}
    return per_request | {"all processes": 1000 * busy / answered, "busy cores": busy / wall_s}


def _brief(summary: dict[str, Any]) -> str:
    return (
        f"{summary['img_per_s']:.1f} img/s  p50 {summary['p50_ms']:.1f} ms  p95 {summary['p95_ms']:.1f} ms  "
        f"errors {summary['errors']}"
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    images = encoded_images(args.images, args.source_size)
    spec = model_spec(args.arch, args.weights, args.image_size)
    with workspace() as work:
        registered = register_versions(work, spec, count=1)
        raw = raw_forward(registered.model_dir, images, args.max_batch_size, args.device, args.duration_s)
        console.print(f"     raw batch={args.max_batch_size}: {raw['img_per_s']:.1f} img/s")
        with fastapi_server(registered.model_dir, args.threads, args.device) as url:
            fastapi = load_levels(url, images, args, "fastapi")
        with serve_app(service_config(registered.uri, args)) as url:
            lensops = load_levels(url, images, args, "lensops")
    return {"raw": raw, "fastapi": fastapi, "lensops": lensops}


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for level, ours in measured["lensops"].items():
        theirs = measured["fastapi"][level]
        row: dict[str, Any] = {"concurrency": level, "raw_img_per_s": measured["raw"]["img_per_s"]}
        for side, summary in zip(SIDES, (ours, theirs), strict=True):
            row |= {f"{side}_{k}": summary[k] for k in ("img_per_s", "p50_ms", "p95_ms", "p99_ms", "errors")}
        row["efficiency"] = ratio(ours["img_per_s"], measured["raw"]["img_per_s"])
        row["vs_fastapi"] = ratio(ours["img_per_s"], theirs["img_per_s"])
        row["p95_vs_fastapi"] = ratio(ours["p95_ms"], theirs["p95_ms"])
        out.append(row)
    return out


COLUMNS = [
    Column("concurrency", "clients", "d"),
    Column("lensops_img_per_s", "lensops img/s", ".1f", "lensops"),
    Column("fastapi_img_per_s", "FastAPI img/s", ".1f", "baseline"),
    Column("raw_img_per_s", "raw img/s", ".1f", "baseline"),
    Column("efficiency", "lensops/raw", ".2f", "ratio"),
    Column("vs_fastapi", "lensops/FastAPI", ".2f", "ratio"),
    Column("lensops_ms", "lensops ms p50/p95/p99", "", "lensops"),
    Column("fastapi_ms", "FastAPI ms p50/p95/p99", "", "baseline"),
    Column("p95_vs_fastapi", "p95 lensops/FastAPI", ".2f", "ratio"),
    Column("errors", "errors lensops/FastAPI", ""),
]


def display(row: dict[str, Any]) -> dict[str, Any]:
    """A table row: latency percentiles and error counts of each side in one cell."""
    shown = dict(row)
    for side in SIDES:
        shown[f"{side}_ms"] = " / ".join(f"{row[f'{side}_{p}_ms']:.0f}" for p in ("p50", "p95", "p99"))
    shown["errors"] = f"{row['lensops_errors']} / {row['fastapi_errors']}"
    return shown


def targets(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best = max(table, key=lambda r: r["efficiency"])
    faster = [r for r in table if r["p95_vs_fastapi"] <= 1.0]
    best_vs = max(faster or table, key=lambda r: r["vs_fastapi"])
    return [
        {
            "target": "serve efficiency >= 0.8 at the best concurrency",
            "measured": f"{best['efficiency']:.2f} at {best['concurrency']} clients",
            "met": best["efficiency"] >= 0.8,
        },
        {
            "target": "img/s >= 1.5x FastAPI at equal or lower p95",
            "measured": f"{best_vs['vs_fastapi']:.2f}x at {best_vs['concurrency']} clients "
            f"(p95 ratio {best_vs['p95_vs_fastapi']:.2f})",
            "met": bool(faster) and best_vs["vs_fastapi"] >= 1.5,
        },
        {
            "target": "zero failed requests",
            "measured": str(sum(r["lensops_errors"] for r in table)),
            "met": all(r["lensops_errors"] == 0 for r in table),
        },
    ]


def cpu_table(measured: dict[str, Any]) -> tuple[list[Column], list[dict[str, Any]]]:
    """Rows: roles; columns: each side and concurrency; cells: CPU ms per answered request."""
    keys = [(side, level) for side in SIDES for level in measured[side]]
    roles = sorted({role for side, level in keys for role in measured[side][level]["cpu"]}, key=_role_order)
    columns = [Column("role", "CPU ms per answered request", "")]
    columns += [Column(f"{side}{level}", f"{side} c={level}", ".1f", _side(side)) for side, level in keys]
    rows = [{"role": role} | {f"{s}{lv}": measured[s][lv]["cpu"].get(role) for s, lv in keys} for role in roles]
    return columns, rows


def _role_order(role: str) -> tuple[int, str]:
    return ({"all processes": 1, "busy cores": 2}.get(role, 0), role)


def _side(side: str) -> str:
    return "lensops" if side == "lensops" else "baseline"


TARGET_COLUMNS = [Column("target", "target", ""), Column("measured", "measured", ""), Column("met", "met", "")]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    set_torch_threads(args.threads)
    measured = measure(args)
    table = rows(measured)
    title = f"serving: {args.arch} at {args.image_size} px, {args.source_size} px uploads, {args.device}"
    note = f"raw = forward of batch {args.max_batch_size}, {args.threads} threads"
    print_table(title, COLUMNS, [display(r) for r in table], note=note)
    print_table("where the CPU goes (from /proc; 'busy cores' is the machine's average)", *cpu_table(measured))
    checks = targets(table)
    print_table("serving targets", TARGET_COLUMNS, checks)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    save_json(args.json, "serving", args.device, settings, {"rows": table, "targets": checks, "measured": measured})


if __name__ == "__main__":
    main()
