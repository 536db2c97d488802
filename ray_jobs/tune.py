"""Run a hyperparameter sweep, as `lensops tune` does (same options; see --help).

ray job submit --working-dir . -- python ray_jobs/tune.py tuning/synthetic-classification.yaml
"""

from lensops.cli import main

if __name__ == "__main__":
    main("tune")
