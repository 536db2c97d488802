"""The main job on embedded defaults: sample data -> validate -> train -> promote -> serve.

A local Ray head (started with ``ray start --head`` unless one runs or an address is given, so
the service outlives the job), a local MLflow store under ./mlruns, and the ELPV solar-cell
images with a few planted bad files unless the data folder already exists.
"""

from __future__ import annotations

from pathlib import Path

from lensops.config import LensopsConfig
from lensops.console import print_validation
from lensops.data import samples
from lensops.data.catalog import build_catalog
from lensops.model.tasks import get_task
from lensops.runtime import ensure_head, init_ray
from lensops.serving.app import run_local
from lensops.serving.client import describe, predict_files
from lensops.tracking import runs
from lensops.tracking.promotion import evaluate_and_promote
from lensops.training.fit import fit

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "elpv.yaml"
"""The ELPV recipe of a source checkout (``make demo`` runs from one)."""


def run_demo(cfg: LensopsConfig, data: Path, address: str | None, port: int) -> None:
    if not data.exists():
        data.mkdir(parents=True)
        print(f"exported {samples.write_elpv(data)} ELPV images to {data}")
        print(f"planted bad files: {', '.join(samples.add_bad_files(data))}")
    init_ray(address or ensure_head())

    print("\n== 1/4 validate ==")
    catalog = build_catalog(cfg.data, get_task(cfg.model.task))
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
    url = run_local(cfg, host="127.0.0.1", port=port)
    test = catalog.split("test").groupby("label").head(2)
    for row, answer in zip(test.itertuples(), predict_files(url, [Path(p) for p in test["path"]]), strict=True):
        print(f"POST {url}/predict_batch  {Path(row.path).name} (labelled {row.label}) -> {describe(answer)}")

    print(f"\nAPI {url}/predict   docs {url}/docs   upload page {url}/")
    print("Ray dashboard http://127.0.0.1:8265   metrics http://127.0.0.1:8080/metrics")
    print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {runs.resolve_uri(cfg.tracking)}")
    print(f"Client: .venv/bin/lensops predict IMAGE... --url {url}")
    print("Stop the service and Ray: .venv/bin/ray stop")
