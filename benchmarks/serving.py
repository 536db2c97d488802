"""Online inference: the lensops Ray Serve application vs a plain FastAPI + torch server under
the same closed-loop HTTP load, against the machine's pipeline ceiling, in one run.

1. An untrained model (``--arch`` backbone with its pretrained weights, fresh head) is saved
   with lensops.model.artifact and registered as ``champion`` in a temporary sqlite MLflow store.
2. The ceiling, in this process on one thread, measured again in every round: the CPU cost
   per image of decoding and preprocessing an upload (:func:`lensops.serving.uploads.prepare`,
   the preprocessing tier's work) and of the batched forward with its answer
   (:class:`lensops.model.forward.Predictor` on batches of ``--max-batch-size``, on the served
   ``--runtime``: the model tier's work), each alone. The machine's cores divided by their sum
   is the most images per second any server can answer here. With ``--runtime onnxruntime``
   the torch eager forward is measured too.
3. Both servers start and stay up: ``_fastapi_baseline.py`` in a subprocess (same preprocessing,
   answer and ``--runtime``, one forward pass per request, ``--threads`` threads), and a local Ray
   (lensops.runtime.init_ray) with the Serve application (lensops.serving.app.run_local). Ray
   stays up, idle, while the baseline is under load; its idle CPU shows in the breakdown.
4. For each concurrency, ``--rounds`` rounds of load on each side in turn (the order reverses
   every other round), the ceiling taking its turn with them; the table gives medians over rounds
   and the range of the rounds' ratios, the efficiency of a round being over its own ceiling.

    .venv/bin/python benchmarks/serving.py --concurrency 1,4,16,64 --rounds 3 --json serving.json
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensops.config import ServeConfig
from lensops.model import artifact, onnx_forward
from lensops.model.forward import ModelInfo, Predictor
from lensops.serving.uploads import InputLimits, prepare

from _common import (
    Column,
    check_device,
    comparison_columns,
    console,
    cores,
    encoded_images,
    in_rounds,
    parser,
    print_table,
    ratio,
    set_torch_threads,
    spread,
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
MODEL_ROLE = "Serve Model replicas"
"""The model tier's row in the CPU breakdown (``_cpu.cpu_by_role``)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    add_model_args(parsed)
    parsed.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts")
    parsed.add_argument("--duration-s", type=float, default=20.0, help="measured seconds per concurrency")
    parsed.add_argument("--warmup-s", type=float, default=5.0, help="unmeasured seconds before each")
    parsed.add_argument("--images", type=int, default=32, help="distinct images the clients cycle through")
    parsed.add_argument("--rounds", type=int, default=3, help="rounds of load on each side, per concurrency")
    parsed.add_argument("--ceiling-s", type=float, default=3.0, help="seconds per ceiling stage, per round")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.concurrency, args.duration_s, args.warmup_s, args.images, args.rounds = "1,8", 2.0, 1.0, 8, 2
        args.ceiling_s = 0.2
    args.levels = [int(c) for c in args.concurrency.split(",")]
    return args


class Ceiling:
    """The pipeline ceiling, measured again in every round: CPU milliseconds per image of decode +
    preprocessing and of the batched forward (on the served ``--runtime``; torch eager too when
    that is ONNX Runtime), each alone on one thread for ``--ceiling-s``, and the img/s they allow
    on this machine's cores (on a GPU the forward runs on the device, and the ceiling is the
    slower of the two stages). A round's efficiency divides by its own ceiling, so the host's
    drift between rounds stays out of it."""

    def __init__(self, model_dir: Path, images: list[bytes], args: argparse.Namespace):
        model, spec = artifact.load(model_dir, args.device)
        info = ModelInfo(name="ceiling", version="1", run_id="", dataset_version="")
        self.runtimes = {"torch": Predictor(model, spec, info)}
        if args.runtime == "onnxruntime":
            graph = onnx_forward.read_or_export(model_dir, model, spec)
            self.runtimes["onnxruntime"] = Predictor(model, spec, info, graph)
        self.images, self.spec, self.args = images, spec, args
        self.limits = InputLimits.from_config(ServeConfig())
        self.batch = {"image": np.stack([self.upload(i) for i in range(args.max_batch_size)])}

    def upload(self, index: int) -> np.ndarray:
        return prepare(self.images[index % len(self.images)], self.spec.preprocess, self.limits)

    def __call__(self) -> dict[str, float]:
        args, threads = self.args, torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            decode_s = cost_per_item(self.upload, 1, args)
            forward_s = {
                name: cost_per_item(lambda _, p=predictor: p.predict(self.batch), args.max_batch_size, args)
                for name, predictor in self.runtimes.items()
            }
        finally:
            torch.set_num_threads(threads)
        served = forward_s[args.runtime]
        ceiling = cores() / (decode_s + served) if args.device == "cpu" else min(cores() / decode_s, 1 / served)
        forward_ms = {f"forward_{name}_cpu_ms": 1000 * seconds for name, seconds in forward_s.items()}
        console.print(
            f" ceiling     decode {1000 * decode_s:.1f} ms + forward {1000 * served:.1f} ms per image "
            f"-> {ceiling:.1f} img/s on {cores()} cores"
        )
        return {"decode_cpu_ms": 1000 * decode_s, "forward_cpu_ms": 1000 * served, **forward_ms, "img_per_s": ceiling}


def cost_per_item(step: Callable[[int], Any], items: int, args: argparse.Namespace) -> float:
    """Seconds per item of ``step(call)`` (which handles ``items`` items) over ``--ceiling-s``
    of calls after a warm-up call: CPU time of this process on the CPU, wall time on a GPU."""
    clock = time.process_time if args.device == "cpu" else time.perf_counter
    step(0)
    calls, spent_from, started = 0, clock(), time.perf_counter()
    while time.perf_counter() - started < args.ceiling_s or calls < 3:
        step(calls)
        calls += 1
    if args.device == "cuda":
        torch.cuda.synchronize()
    return (clock() - spent_from) / (calls * items)


def load_once(url: str, images: list[bytes], level: int, args: argparse.Namespace, side: str) -> dict[str, Any]:
    """One round of ``level`` clients on one side: the load summary, CPU per request by role,
    and (lensops) the replicas running at its end."""
    before = snapshot()
    run = run_load(url, images, level, args.duration_s, args.warmup_s)
    result = run.summary() | {"cpu": cpu_per_request(run, before, snapshot())}
    if side == "lensops":
        result["replicas"] = replica_counts()
    console.print(f"{side:>8} c={level:<3} {_brief(result)}")
    return result


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


def rounds_at(
    level: int, urls: dict[str, str], ceiling: Ceiling, images: list[bytes], args: argparse.Namespace
) -> list[dict]:
    """``--rounds`` rounds of ``level`` clients on each side and of the ceiling, in turn
    (:func:`in_rounds`)."""
    sides = {side: functools.partial(load_once, url, images, level, args, side) for side, url in urls.items()}
    return in_rounds(sides | {"ceiling": ceiling}, args.rounds)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    images = encoded_images(args.images, args.source_size)
    spec = model_spec(args.arch, args.weights, args.image_size)
    with workspace() as work:
        registered = register_versions(work, spec, count=1, runtime=args.runtime)
        ceiling = Ceiling(registered.model_dir, images, args)
        with (
            fastapi_server(registered.model_dir, args.threads, args.device, args.runtime) as fastapi,
            serve_app(service_config(registered.uri, args)) as lensops,
        ):
            urls = {"lensops": lensops, "fastapi": fastapi}
            levels = {level: rounds_at(level, urls, ceiling, images, args) for level in args.levels}
    ceilings = [r["ceiling"] for rounds in levels.values() for r in rounds]
    return {"ceiling": {key: statistics.median(c[key] for c in ceilings) for key in ceilings[0]}, "levels": levels}


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """Per concurrency: each side's and the ceiling's medians over rounds, and the medians and
    ranges of the rounds' own ratios: lensops over FastAPI, lensops over the round's ceiling
    (the efficiency), and the model tier's CPU per request over the round's raw forward."""
    out = []
    for level, rounds in measured["levels"].items():
        row: dict[str, Any] = {"concurrency": level, "rounds": len(rounds)}
        for side in SIDES:
            for key in ("img_per_s", "p50_ms", "p95_ms", "p99_ms"):
                row[f"{side}_{key}"] = statistics.median(r[side][key] for r in rounds)
            row[f"{side}_errors"] = sum(r[side]["errors"] for r in rounds)
        row["ceiling_img_per_s"] = statistics.median(r["ceiling"]["img_per_s"] for r in rounds)
        per_round = {
            "vs_fastapi": [ratio(r["lensops"]["img_per_s"], r["fastapi"]["img_per_s"]) for r in rounds],
            "efficiency": [ratio(r["lensops"]["img_per_s"], r["ceiling"]["img_per_s"]) for r in rounds],
            "model_vs_forward": [ratio(model_cpu_ms(r), r["ceiling"]["forward_cpu_ms"]) for r in rounds],
        }
        for key, ratios in per_round.items():
            middle = spread(ratios)
            row |= {key: middle["median"], f"{key}_range": f"{middle['lowest']:.2f}..{middle['highest']:.2f}"}
        row["p95_vs_fastapi"] = statistics.median(ratio(r["lensops"]["p95_ms"], r["fastapi"]["p95_ms"]) for r in rounds)
        out.append(row)
    return out


def model_cpu_ms(measured_round: dict[str, Any]) -> float:
    """CPU ms per answered request of the model replicas in a round of lensops (one image each)."""
    return measured_round["lensops"]["cpu"].get(MODEL_ROLE, 0.0)


RATIOS = ("efficiency", "vs_fastapi", "model_vs_forward")
"""The ratios shown with their range over rounds."""
COLUMNS = [
    Column("concurrency", "clients", "d"),
    Column("lensops_img_per_s", "lensops img/s", ".1f", "lensops"),
    Column("fastapi_img_per_s", "FastAPI img/s", ".1f", "baseline"),
    Column("ceiling_img_per_s", "ceiling img/s", ".1f", "baseline"),
    Column("efficiency", "lensops/ceiling (range)", "", "ratio"),
    Column("vs_fastapi", "lensops/FastAPI (range)", "", "ratio"),
    Column("lensops_ms", "lensops ms p50/p95/p99", "", "lensops"),
    Column("fastapi_ms", "FastAPI ms p50/p95/p99", "", "baseline"),
    Column("p95_vs_fastapi", "p95 lensops/FastAPI", ".2f", "ratio"),
    Column("model_vs_forward", "model tier CPU/forward (range)", "", "ratio"),
    Column("errors", "errors lensops/FastAPI", ""),
    Column("rounds", "rounds", "d"),
]


def display(row: dict[str, Any]) -> dict[str, Any]:
    """A table row: latency percentiles and error counts of each side in one cell, each ratio
    with its range."""
    shown = dict(row)
    for side in SIDES:
        shown[f"{side}_ms"] = " / ".join(f"{row[f'{side}_{p}_ms']:.0f}" for p in ("p50", "p95", "p99"))
    shown["errors"] = f"{row['lensops_errors']} / {row['fastapi_errors']}"
    for key in RATIOS:
        shown[key] = f"{row[key]:.2f} ({row[f'{key}_range']})"
    return shown


def targets(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best = max(table, key=lambda r: r["efficiency"])
    faster = [r for r in table if r["p95_vs_fastapi"] <= 1.0]
    best_vs = max(faster or table, key=lambda r: r["vs_fastapi"])
    busiest = next((r for r in table if r["concurrency"] == 16), table[-1])
    return [
        {
            "target": f"model tier CPU per image <= 1.2x the raw forward's, at {busiest['concurrency']} clients",
            "measured": f"{busiest['model_vs_forward']:.2f}x ({busiest['model_vs_forward_range']})",
            "met": busiest["model_vs_forward"] <= 1.2,
        },
        {
            "target": "served img/s >= 0.8 of the ceiling at the best concurrency",
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
    """Rows: roles; columns: each side and concurrency; cells: CPU ms per answered request,
    the median over rounds."""
    keys = [(side, level) for side in SIDES for level in measured["levels"]]
    cells = {key: _median_cpu(measured["levels"][key[1]], key[0]) for key in keys}
    roles = sorted({role for cpu in cells.values() for role in cpu}, key=_role_order)
    columns = [Column("role", "CPU ms per answered request", "")]
    columns += [Column(f"{side}{level}", f"{side} c={level}", ".1f", _side(side)) for side, level in keys]
    rows = [{"role": role} | {f"{s}{lv}": cells[(s, lv)].get(role) for s, lv in keys} for role in roles]
    return columns, rows


def _median_cpu(rounds: list[dict[str, Any]], side: str) -> dict[str, float]:
    roles = {role for r in rounds for role in r[side]["cpu"]}
    return {role: statistics.median(r[side]["cpu"][role] for r in rounds if role in r[side]["cpu"]) for role in roles}


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
    title = (
        f"serving: {args.arch} at {args.image_size} px ({args.runtime}), {args.source_size} px uploads, {args.device}"
    )
    ceiling = measured["ceiling"]
    note = (
        f"medians of {args.rounds} rounds; ceiling = {cores()} cores / (decode {ceiling['decode_cpu_ms']:.1f} ms "
        f"+ forward {ceiling['forward_cpu_ms']:.1f} ms per image at batch {args.max_batch_size}), "
        "measured in every round; ratios are medians of the rounds' own"
    )
    print_table(title, COLUMNS, [display(r) for r in table], note=note)
    print_table("where the CPU goes (from /proc; 'busy cores' is the machine's average)", *cpu_table(measured))
    if "forward_onnxruntime_cpu_ms" in ceiling:
        torch_ms, ort_ms = ceiling["forward_torch_cpu_ms"], ceiling["forward_onnxruntime_cpu_ms"]
        row = {"metric": "forward CPU ms per image, 1 thread", "lensops": ort_ms, "baseline": torch_ms}
        columns = comparison_columns("ONNX Runtime", "torch eager", ".2f")
        print_table(f"model tier runtimes, batch {args.max_batch_size}", columns, [row | {"ratio": ort_ms / torch_ms}])
    checks = targets(table)
    print_table("serving targets", TARGET_COLUMNS, checks)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    results = {"rows": table, "targets": checks, "ceiling": ceiling, "levels": measured["levels"]}
    save_json(args.json, "serving", args.device, settings, results)


if __name__ == "__main__":
    main()
