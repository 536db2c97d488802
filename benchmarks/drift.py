"""Drift detection on ELPV: how often the monitor cries wolf, and which shifts it finds.

A model is trained on the ELPV cells (``configs/elpv.yaml``, ``--epochs``) and registered with
its reference profile. Its held-out test split is then scored as new data, once unshifted and
once per shift and strength (``lensops.monitoring.shifts``: brightness, contrast, blur, sensor
noise), and windows of ``--window`` images are resampled from the scores with fixed seeds:

* unshifted: ``--windows`` windows (50), the share decided ``ok`` (the target is >= 95%);
* each shift: ``--shift-windows`` windows (20) per strength, the share decided ``drift`` and
  the checks that fired most; and a class mix shift (windows drawn with mostly defective cells).

The smallest strength of each kind detected in at least 90% of its windows is the last table.

    .venv/bin/python benchmarks/drift.py --json drift.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import ray
from PIL import Image

from lensops.config import load_config
from lensops.data import samples
from lensops.data.catalog import build_catalog
from lensops.monitoring import power
from lensops.monitoring.profile import Profile
from lensops.monitoring.window import Window
from lensops.tracking import registry
from lensops.training.fit import fit

from _common import Column, console, parser, print_table, start_ray, workspace, write_json

STRENGTHS = {
    "brightness": (-0.03, -0.05, -0.1, -0.2),
    "contrast": (-0.05, -0.1, -0.2, -0.4),
    "blur": (0.5, 1.0, 2.0, 3.0),
    "noise": (0.005, 0.01, 0.02, 0.04),
}
MIX = (0.5, 0.7, 0.9)
"""Share of defective cells in a window under the class mix shift."""
DETECTED = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    parsed.add_argument("--epochs", type=int, default=3, help="training epochs of the model checked")
    parsed.add_argument("--window", type=int, default=100, help="images per window")
    parsed.add_argument("--windows", type=int, default=50, help="unshifted windows")
    parsed.add_argument("--shift-windows", type=int, default=20, help="windows per shift and strength")
    return parsed.parse_args(argv)


def trained(work: Path, epochs: int) -> tuple[Any, Profile, list[Path], list[str]]:
    """Train on the ELPV export; the registered predictor, its profile and the test split."""
    data = work / "elpv"
    samples.write_elpv(data)
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "elpv.yaml",
        [
            f"data.source={data}",
            f"data.work_dir={work / 'work'}",
            f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
            f"train.epochs={epochs}",
        ],
    )
    outcome = fit(cfg)
    console.print(f"trained: test metrics {outcome.test_metrics}")
    uri = cfg.tracking.tracking_uri
    version = registry.require(uri, outcome.model_name, outcome.version)
    test = build_catalog(cfg.data).split("test")
    files = [data / path for path in test["path"]]
    predictor = registry.load_predictor(uri, outcome.model_name, outcome.version)
    return predictor, registry.load_profile(uri, version), files, list(test["label"])


def measure(
    args: argparse.Namespace, predictor: Any, profile: Profile, images: list[Image.Image], labels: list[str]
) -> dict[str, Any]:
    cfg = load_config(None).monitor
    pool = power.score(predictor, images)
    unshifted = power.drift_rate(profile, pool, args.window, args.windows, cfg)
    rows = [{"shift": "none", "strength": 0.0, **_row(unshifted)}]
    for shift, strengths in STRENGTHS.items():
        for strength in strengths:
            scored: Window = power.score(predictor, power.shifted(images, shift, strength))
            counted = power.drift_rate(profile, scored, args.window, args.shift_windows, cfg)
            rows.append({"shift": shift, "strength": strength, **_row(counted)})
            console.print(f"{shift} {strength}: {counted.rate:.2f} ({counted.top()})")
    for share in MIX:
        weights = power.class_weights(labels, "defective", share)
        counted = power.drift_rate(profile, pool, args.window, args.shift_windows, cfg, weights=weights)
        rows.append({"shift": "defective share", "strength": share, **_row(counted)})
    return {
        "ok_rate": 1 - unshifted.rate,
        "rows": rows,
        "natural_defective_share": labels.count("defective") / len(labels),
    }


def _row(counted: power.Rate) -> dict[str, Any]:
    return {"windows": counted.windows, "detected": counted.rate, "fired": counted.top()}


def smallest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for shift in [*STRENGTHS, "defective share"]:
        detected = [row for row in rows if row["shift"] == shift and row["detected"] >= DETECTED]
        first = min(detected, key=lambda row: abs(row["strength"]), default=None)
        found.append(
            {
                "shift": shift,
                "strength": first["strength"] if first else "none tried",
                "fired": (first or {}).get("fired", "-"),
            }
        )
    return found


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with workspace() as work:
        start_ray()
        predictor, profile, files, labels = trained(work, args.epochs)
        ray.shutdown()
        images = [Image.open(path).convert("RGB") for path in files]
        results = measure(args, predictor, profile, images, labels)
    title = f"drift checks on the ELPV test split ({len(images)} cells), windows of {args.window}"
    console.print(f"unshifted: {results['ok_rate']:.0%} of {args.windows} windows ok")
    columns = [
        Column("shift", "shift", ""),
        Column("strength", "strength", ""),
        Column("detected", "windows decided drift", ".2f"),
        Column("fired", "checks that fired most (windows)", ""),
    ]
    print_table(title, columns, results["rows"])
    found = smallest(results["rows"])
    print_table("smallest shift detected in >= 90% of windows", [columns[0], columns[1], columns[3]], found)
    write_json(args.json, "drift", "cpu", {k: v for k, v in vars(args).items() if k != "json"}, results)


if __name__ == "__main__":
    main()
