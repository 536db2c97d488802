"""The retraining loop on one data location: validate -> train or sweep -> evaluate -> promote.

    python ray_jobs/pipeline.py --config configs/elpv.yaml --data s3://bucket/cells
    python ray_jobs/pipeline.py --sweep tuning/synthetic-classification.yaml --data data/synthetic

Exits 1 with the failed step named (and the champion untouched) when a step fails. With
``--service-url`` the service is told to swap at once (token from $LENSOPS_RELOAD_TOKEN);
without it the service follows the champion alias within its watch interval.
"""

from __future__ import annotations

import argparse
import sys

from lensops.config import load_config
from lensops.pipeline import StepFailed, run_pipeline
from lensops.runtime import init_ray
from lensops.sweep_config import load_sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="train this fixed config (YAML)")
    source.add_argument("--sweep", help="run this sweep (YAML in tuning/) and take its best trial")
    parser.add_argument("--data", help="data location (folder, s3:// prefix or manifest.csv): sets data.source")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--service-url", help="running lensops service to tell about a new champion")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or local Ray)")
    args = parser.parse_args()
    overrides = [*([f"data.source={args.data}"] if args.data else []), *args.overrides]
    sweep = None
    if args.sweep:
        sweep, cfg = load_sweep(args.sweep, overrides)
    else:
        cfg = load_config(args.config, overrides)
    init_ray(args.address)
    try:
        outcome = run_pipeline(cfg, sweep, args.service_url)
    except StepFailed as failure:
        print(f"pipeline failed: {failure}", file=sys.stderr)
        return 1
    decision = outcome.decision
    print(f"pipeline_run_id: {outcome.run_id}")
    for role, score in (("challenger", decision.challenger), ("previous champion", decision.champion)):
        if score:
            print(f"{role}: version {score.version} {decision.metric}={score.metrics[decision.metric]:.4f}")
    print(f"decision: {'promoted' if decision.promoted else 'kept'} ({decision.reason})")
    print(f"champion: version {outcome.champion}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
