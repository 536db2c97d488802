"""The main job on embedded defaults: sample data -> validate -> train -> evaluate/promote.

Local Ray, a local MLflow store under ./mlruns, and the ELPV solar-cell images (with a few
planted bad files) unless ``--data`` points elsewhere. ``make demo`` runs exactly this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lensops import sample_data
from lensops.catalog import build_catalog
from lensops.config import load_config
from lensops.console import print_validation
from lensops.promotion import evaluate_and_promote
from lensops.runtime import init_ray
from lensops.train import fit

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "elpv.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/elpv"), help="dataset folder (created if missing)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or local Ray)")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"data.source={args.data}", *args.overrides])
    if not args.data.exists():
        args.data.mkdir(parents=True)
        print(f"exported {sample_data.write_elpv(args.data)} ELPV images to {args.data}")
        print(f"planted bad files: {', '.join(sample_data.add_bad_files(args.data))}")
    init_ray(args.address)

    print("\n== 1/3 validate ==")
    catalog = build_catalog(cfg.data)
    print_validation(catalog.report)

    print("\n== 2/3 train (Ray Train, tracked in MLflow) ==")
    outcome = fit(cfg, catalog)
    print(f"run_id: {outcome.run_id}")
    print(f"registered: {outcome.model_name} version {outcome.version} (alias challenger)")
    print(" ".join(f"{k}={v:.4f}" for k, v in outcome.test_metrics.items()))

    print("\n== 3/3 evaluate against the champion ==")
    decision = evaluate_and_promote(cfg, outcome.version)
    verdict = "promoted to champion" if decision.promoted else "champion kept"
    print(f"version {decision.challenger.version}: {verdict} ({decision.reason})")


if __name__ == "__main__":
    main()
