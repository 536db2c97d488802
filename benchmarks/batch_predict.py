"""Batch scoring: the lensops Ray Data job vs a plain single-process PyTorch loop, in one run.

Both score every PNG of a generated folder with the same registered model (``--arch``,
``--weights``), decode included, and both load the model from the registry inside the timing:

* lensops: :func:`lensops.scoring.batch.batch_predict` on a local Ray: read, hash, check and
  decode fused into an actor pool of ``--concurrency`` scorers (one model copy each, answering
  through ``--runtime``: torch eager or ONNX Runtime), parquet parts written, an MLflow run
  logged; a fresh output folder each round.
* plain: one process with ``--threads`` torch threads: read each file, decode it with the same
  preprocessing (:func:`lensops.model.preprocess.to_uint8`), batches of ``--batch-size`` through
  the same forward path (:class:`lensops.model.forward.Predictor`), answers kept in memory.

This host's speed drifts between minutes, so the sides alternate over ``--rounds`` rounds (which
side goes first alternates too), and the table reports each round's ratio, their median and
spread (lowest..highest).

    .venv/bin/python benchmarks/batch_predict.py --count 500 --rounds 3 --json batch_predict.json
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

from lensops.config import LensopsConfig
from lensops.data import samples
from lensops.model.preprocess import to_uint8
from lensops.scoring.batch import batch_predict
from lensops.tracking import registry

from _common import (
    Column,
    add_model_flags,
    check_device,
    console,
    cores,
    in_rounds,
    parser,
    print_table,
    set_torch_threads,
    spread,
    start_ray,
    stopwatch,
    workspace,
    write_json,
)
from _serve_setup import MODEL_NAME, model_spec, register_versions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    add_model_flags(parsed)
    parsed.add_argument("--count", type=int, default=500, help="images per class (2 classes)")
    parsed.add_argument("--size", type=int, default=300, help="side of the generated PNGs (px)")
    parsed.add_argument("--batch-size", type=int, default=32, help="images per forward pass, both sides")
    parsed.add_argument("--concurrency", type=int, default=cores(), help="lensops scoring actors")
    parsed.add_argument("--rounds", type=int, default=3, help="measured rounds of both sides")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.arch, args.weights, args.image_size, args.count, args.size, args.rounds = "resnet18", "none", 64, 24, 96, 1
    return args


def lensops_round(cfg: LensopsConfig, folder: Path, out: Path) -> int:
    outcome = batch_predict(cfg, str(folder), str(out))
    return outcome.scored


def plain_round(uri: str, files: list[Path], batch_size: int, device: str) -> int:
    predictor = registry.load_predictor(uri, MODEL_NAME, registry.CHAMPION, device)
    answers = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = np.stack([to_uint8(path.read_bytes(), predictor.spec.preprocess) for path in chunk])
        answers += predictor.predict({"image": images})
    return len(answers)


def timed(side: Callable[[], int]) -> float:
    """Images per second of one call of ``side`` (which returns the images it scored)."""
    with stopwatch() as elapsed:
        images = side()
    return images / elapsed()


def measure(args: argparse.Namespace, work: Path, folder: Path, uri: str) -> list[dict[str, Any]]:
    cfg = LensopsConfig.model_validate(
        {
            "tracking": {"tracking_uri": uri, "registered_model": MODEL_NAME, "experiment": "benchmark"},
            "batch": {
                "batch_size": args.batch_size,
                "concurrency": args.concurrency,
                "device": args.device,
                "runtime": args.runtime,
            },
        }
    )
    files = sorted(folder.rglob("*.png"))
    outputs = (work / f"out-{index}" for index in itertools.count())  # a fresh output each round
    sides = {
        "lensops": lambda: timed(lambda: lensops_round(cfg, folder, next(outputs))),
        "plain": lambda: timed(lambda: plain_round(uri, files, args.batch_size, args.device)),
    }
    rows = in_rounds(sides, args.rounds)
    for row in rows:
        row["ratio"] = row["lensops"] / row["plain"]
        console.print(f"round {row['round']}: lensops {row['lensops']:.1f} img/s, plain {row['plain']:.1f} img/s")
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    set_torch_threads(args.threads)
    with workspace() as work:
        folder = work / "images"
        total = samples.write_synthetic(folder, count_per_class=args.count, size=args.size)
        uri = register_versions(work, model_spec(args.arch, args.weights, args.image_size), 1, args.runtime).uri
        start_ray()
        rows = measure(args, work, folder, uri)
        ray.shutdown()
    ratios = spread([row["ratio"] for row in rows])
    summary = {f"{k}_ratio": v for k, v in ratios.items()}
    span = f"{ratios['lowest']:.2f}..{ratios['highest']:.2f}"
    rows.append({"round": "median", "ratio": ratios["median"], "first": span})
    columns = [
        Column("round", "round", ""),
        Column("first", "first (median row: spread)", ""),
        Column("lensops", f"lensops img/s ({args.concurrency} actors, {args.runtime})", ".1f", "lensops"),
        Column("plain", f"plain loop img/s ({args.threads} threads)", ".1f", "baseline"),
        Column("ratio", "ratio lensops/plain", ".2f", "ratio"),
    ]
    title = f"batch scoring: {total} PNGs {args.size} px, {args.arch} at {args.image_size} px, {args.device}"
    print_table(title, columns, rows)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    write_json(args.json, "batch_predict", args.device, settings, {"rounds": rows[:-1], **summary})


if __name__ == "__main__":
    main()
