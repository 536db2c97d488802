"""Evaluate a registered version against the champion and promote it if it is better, as
`lensops promote` does (same options; see --help).

    ray job submit --working-dir . -- python ray_jobs/promote.py --config configs/synthetic.yaml
"""

from lensops.cli import main

if __name__ == "__main__":
    main("promote")
