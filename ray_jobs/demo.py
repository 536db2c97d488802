"""The main job on embedded defaults: sample data -> validate -> train -> promote -> serve.

A local Ray head (started with ``ray start --head`` unless one runs or ``--address`` is given,
so the service outlives this script), a local MLflow store under ./mlruns, and the ELPV
solar-cell images with a few planted bad files unless ``--data`` points elsewhere.
``make demo`` runs exactly this.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lensops import sample_data, tracking
from lensops.catalog import build_catalog
from lensops.client import describe, predict_files
from lensops.config import load_config
from lensops.console import print_validation
from lensops.promotion import evaluate_and_promote
from lensops.runtime import ensure_head, init_ray
from lensops.service import run_local
from lensops.train import fit

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "elpv.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/elpv"), help="dataset folder (created if missing)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or a local head node)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the service")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"data.source={args.data.resolve()}", *args.overrides])
    if not args.data.exists():
        args.data.mkdir(parents=True)
        print(f"exported {sample_data.write_elpv(args.data)} ELPV images to {args.data}")
        print(f"planted bad files: {', '.join(sample_data.add_bad_files(args.data))}")
    init_ray(args.address or ensure_head())

    print("\n== 1/4 validate ==")
    catalog = build_catalog(cfg.data)
    print_validation(catalog.report)

    print("\n== 2/4 train (Ray Train, tracked in MLflow) ==")
    outcome = fit(cfg, catalog)
    print(f"run_id: {outcome.run_id}")
    print(f"registered: {outcome.model_name} version {outcome.version} (alias challenger)")
    print(" ".join(f"{k}={v:.4f}" for k, v in outcome.test_metrics.items()))

    print("\n== 3/4 evaluate against the champion ==")
    decision = evaluate_and_promote(cfg, outcome.version, catalog)
    verdict = "promoted to champion" if decision.promoted else "champion kept"
    print(f"version {decision.challenger.version}: {verdict} ({decision.reason})")

    print("\n== 4/4 serve the champion (Ray Serve) and predict over HTTP ==")
    url = run_local(cfg, host="127.0.0.1", port=args.port)
    test = catalog.split("test").groupby("label").head(2)
    for row, answer in zip(test.itertuples(), predict_files(url, [Path(p) for p in test["path"]]), strict=True):
        print(f"POST {url}/predict_batch  {Path(row.path).name} (labelled {row.label}) -> {describe(answer)}")

    print(f"\nAPI {url}/predict   docs {url}/docs   upload page {url}/")
    print("Ray dashboard http://127.0.0.1:8265   metrics http://127.0.0.1:8080/metrics")
    print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking.resolve_uri(cfg.tracking)}")
    print(f"Client: .venv/bin/lensops predict IMAGE... --url {url}")
    print("Stop the service and Ray: .venv/bin/ray stop")


if __name__ == "__main__":
    main()
