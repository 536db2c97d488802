"""The main job on embedded defaults: sample data -> validate -> train -> promote -> serve.

Local Ray, a local MLflow store under ./mlruns, and the ELPV solar-cell images (with a few
planted bad files) unless ``--data`` points elsewhere. ``make demo`` runs exactly this.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import requests

from lensops import sample_data, tracking
from lensops.catalog import build_catalog
from lensops.config import load_config
from lensops.console import print_validation
from lensops.promotion import evaluate_and_promote
from lensops.runtime import init_ray
from lensops.service import run_local
from lensops.train import fit

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "elpv.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/elpv"), help="dataset folder (created if missing)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or local Ray)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the service")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"data.source={args.data}", *args.overrides])
    if not args.data.exists():
        args.data.mkdir(parents=True)
        print(f"exported {sample_data.write_elpv(args.data)} ELPV images to {args.data}")
        print(f"planted bad files: {', '.join(sample_data.add_bad_files(args.data))}")
    init_ray(args.address)

    print("\n== 1/4 validate ==")
    catalog = build_catalog(cfg.data)
    print_validation(catalog.report)

    print("\n== 2/4 train (Ray Train, tracked in MLflow) ==")
    outcome = fit(cfg, catalog)
    print(f"run_id: {outcome.run_id}")
    print(f"registered: {outcome.model_name} version {outcome.version} (alias challenger)")
    print(" ".join(f"{k}={v:.4f}" for k, v in outcome.test_metrics.items()))

    print("\n== 3/4 evaluate against the champion ==")
    decision = evaluate_and_promote(cfg, outcome.version)
    verdict = "promoted to champion" if decision.promoted else "champion kept"
    print(f"version {decision.challenger.version}: {verdict} ({decision.reason})")

    print("\n== 4/4 serve the champion (Ray Serve) and predict over HTTP ==")
    url = run_local(cfg, port=args.port)
    example = catalog.split("test").iloc[0]
    with open(example["path"], "rb") as image:
        response = requests.post(f"{url}/predict", files={"file": (Path(example["path"]).name, image)}, timeout=60)
    print(f"POST {url}/predict  ({example['path']}, labelled {example['label']})")
    print(f"HTTP {response.status_code}: {json.dumps(response.json(), indent=2)}")
    response.raise_for_status()
    print(f"\nMLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking.resolve_uri(cfg.tracking)}")
    print("Keep the service running: .venv/bin/serve run serve_app:build_app")


if __name__ == "__main__":
    main()
