"""Fine-tune and register a model, as `lensops train` does (same options; see --help).

ray job submit --working-dir . -- python ray_jobs/train.py --config configs/synthetic.yaml
"""

from lensops.cli import main

if __name__ == "__main__":
    main("train")
