"""Fine-tune and register a model: ``python ray_jobs/train.py --config configs/x.yaml [--set k=v]``.

Also runs under ``ray job submit --working-dir . -- python ray_jobs/train.py ...``.
"""

from __future__ import annotations

import argparse

from lensops.config import load_config
from lensops.runtime import init_ray
from lensops.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or local Ray)")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    init_ray(args.address)
    outcome = fit(cfg)
    print(f"run_id: {outcome.run_id}")
    print(f"registered: {outcome.model_name} version {outcome.version} (alias challenger)")
    print(f"dataset_version: {outcome.dataset_version}")
    for name, value in outcome.test_metrics.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
