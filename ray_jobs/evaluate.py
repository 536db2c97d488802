"""Evaluate a registered version against the champion and promote it if it is better.

``python ray_jobs/evaluate.py --config configs/x.yaml [--version challenger] [--decision out.json]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lensops.config import load_config
from lensops.promotion import evaluate_and_promote
from lensops.registry import CHALLENGER
from lensops.runtime import init_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="YAML config file (tracking section: model name, margin)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--version", default=CHALLENGER, help="version number or alias to evaluate")
    parser.add_argument("--decision", type=Path, help="write the decision JSON here")
    parser.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or local Ray)")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    init_ray(args.address)
    decision = evaluate_and_promote(cfg, args.version)
    text = decision.model_dump_json(indent=2)
    print(text)
    if args.decision:
        args.decision.write_text(text)
    verdict = "promoted to champion" if decision.promoted else "champion kept"
    print(f"version {decision.challenger.version}: {verdict} ({decision.reason})")


if __name__ == "__main__":
    main()
