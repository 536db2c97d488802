"""Run a hyperparameter sweep: ``python ray_jobs/tune.py tuning/<sweep>.yaml [--set k=v]``.

Each trial is one Ray Train fit, logged as a child of the sweep's MLflow run; the best trial
is evaluated on the test split and registered with alias ``challenger``. Run it again after an
interruption and it resumes (``--restart`` starts over). Under ``ray job submit``::

    ray job submit --working-dir . -- python ray_jobs/tune.py tuning/synthetic-classification.yaml
"""

from __future__ import annotations

import argparse

from lensops.runtime import init_ray
from lensops.sweep import run_sweep
from lensops.sweep_config import load_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep definition (YAML, see tuning/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="base config section.key=value")
    parser.add_argument("--restart", action="store_true", help="ignore a previous run of this sweep and start over")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or local Ray)")
    args = parser.parse_args()
    sweep, base = load_sweep(args.sweep, args.overrides)
    init_ray(args.address)
    outcome = run_sweep(sweep, base, restart=args.restart)
    best = outcome.best
    print(f"sweep_run_id: {outcome.parent_run_id}")
    print(f"best_trial: {outcome.trials[0].trial_id} run_id {best.run_id}")
    print(f"registered: {best.model_name} version {best.version} (alias challenger)")
    for name, value in best.test_metrics.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    main()
