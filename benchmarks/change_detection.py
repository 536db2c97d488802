"""Change detection, recorded: a Siamese U-Net trained on generated scenes, scored on scenes
drawn from another generator seed, against the non-learned baseline on the same tiles.

The model trains through the one lensops path (``configs/change.yaml``: catalog, Ray Train
on ``--workers`` CPU workers, MLflow run, registry) on ``--scenes`` scenes of seed 0. The
registered version then answers every tile of ``--test-scenes`` scenes of seed 1 through the
one forward path, and the per-pixel difference of the two dates, thresholded by Otsu's method,
answers the same tiles. The run gets the held-out IoU, F1, precision and recall, the baseline's,
the wall time of the fit, and a figure of held-out tiles (before, after, true and predicted change).

    .venv/bin/python benchmarks/change_detection.py --scenes 100 --test-scenes 30 --epochs 10
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lensops.config import load_config
from lensops.data import samples
from lensops.model.change_baseline import difference_masks
from lensops.model.preprocess import PreprocessSpec, mask_to_uint8, to_uint8
from lensops.tracking import registry, runs
from lensops.training.fit import TrainOutcome, fit

from _common import Column, parser, print_table, start_ray, stopwatch, workspace, write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "change.yaml"
FILES = ("before", "after", "mask")
BATCH = 64


def held_out(folder: Path, spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Every tile of a generated folder, decoded as the model's inputs and targets are."""
    rows = pd.read_csv(folder / samples.MANIFEST)
    read = {name: [(folder / path).read_bytes() for path in rows[name]] for name in FILES}
    return {
        "before": np.stack([to_uint8(data, spec) for data in read["before"]]),
        "after": np.stack([to_uint8(data, spec) for data in read["after"]]),
        "target": np.stack([mask_to_uint8(data, spec) for data in read["mask"]]),
    }


def main() -> None:
    args = _arguments()
    with workspace() as tmp:
        train_dir, test_dir = tmp / "train", tmp / "test"
        samples.write_change(train_dir, args.scenes, args.tile, seed=0)
        samples.write_change(test_dir, args.test_scenes, args.tile, seed=1)
        cfg = load_config(CONFIG, _overrides(args, train_dir, tmp))
        start_ray()
        with stopwatch() as elapsed:
            outcome = fit(cfg)
            fit_seconds = elapsed()
        uri = runs.resolve_uri(cfg.tracking)
        rows = _score(uri, outcome, test_dir, fit_seconds)
    note = f"held-out: {args.test_scenes} scenes of seed 1; fit {fit_seconds:.0f} s; MLflow run {outcome.run_id}"
    print_table("change detection on held-out scenes", _columns(), rows, note)
    write_json(args.json, "change_detection", args.device, vars(args) | {"fit_seconds": fit_seconds}, rows)


def _score(uri: str, outcome: TrainOutcome, test_dir: Path, fit_seconds: float) -> list[dict[str, object]]:
    """The registered version and the baseline on every held-out tile, logged into the fit's run."""
    predictor = registry.load_predictor(uri, outcome.model_name, outcome.version)
    tiles = held_out(test_dir, predictor.spec.preprocess)
    count = len(tiles["target"])
    outputs = np.concatenate([predictor.forward.outputs(_slice(tiles, i)) for i in range(0, count, BATCH)])
    task = predictor.spec.task
    model = task.metrics(tiles["target"], outputs, predictor.spec.classes)
    baseline = task.metrics(tiles["target"], difference_masks(tiles["before"], tiles["after"]).astype(float), [])
    recorded = {f"heldout_{k}": v for k, v in model.items()} | {f"baseline_{k}": v for k, v in baseline.items()}
    runs.log_metrics(uri, outcome.run_id, recorded | {"fit_seconds": fit_seconds, "heldout_tiles": count})
    runs.log_figure(uri, outcome.run_id, task.examples_figure(tiles, outputs), "evaluation/heldout_examples.png")
    return [{"detector": "lensops Siamese U-Net", **model}, {"detector": "Otsu on the difference", **baseline}]


def _slice(tiles: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    return {name: array[start : start + BATCH] for name, array in tiles.items()}


def _overrides(args, train_dir: Path, tmp: Path) -> list[str]:
    overrides = [
        f"data.source={train_dir / samples.MANIFEST}",
        f"data.work_dir={tmp / 'work'}",
        f"preprocess.image_size={args.tile}",
        f"train.epochs={args.epochs}",
        f"train.num_workers={args.workers}",
        *(["data.split={train: 0.5, val: 0.25, test: 0.25}", "train.warmup_epochs=0"] if args.smoke else []),
    ]
    uri = args.tracking_uri or (f"sqlite:///{tmp / 'mlflow.db'}" if args.smoke else None)  # a smoke run leaves nothing
    return overrides + ([f"tracking.tracking_uri={uri}"] if uri else [])


def _columns() -> list[Column]:
    return [Column("detector", "detector", ""), *(Column(m, m, ".3f") for m in ("iou", "f1", "precision", "recall"))]


def _arguments():
    parsed = parser(__doc__)
    parsed.add_argument("--scenes", type=int, default=100, help="training scenes (16 tiles each), seed 0")
    parsed.add_argument("--test-scenes", type=int, default=30, help="held-out scenes, seed 1")
    parsed.add_argument("--tile", type=int, default=64, help="tile side in pixels")
    parsed.add_argument("--epochs", type=int, default=10)
    parsed.add_argument("--workers", type=int, default=2, help="Ray Train workers (one CPU each)")
    parsed.add_argument("--tracking-uri", help="MLflow store for the run; default: lensops' own (./mlruns)")
    args = parsed.parse_args()
    if args.smoke:  # whole scenes go to one split each: a few per split
        args.scenes, args.test_scenes, args.tile, args.epochs = 12, 2, 32, 1
    return args


if __name__ == "__main__":
    main()
