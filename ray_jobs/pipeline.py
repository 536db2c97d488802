"""The retraining loop on one data location, as `lensops pipeline` does (same options; see --help):
validate -> train or sweep -> evaluate -> promote -> notify.

    ray job submit --working-dir . -- python ray_jobs/pipeline.py --config configs/elpv.yaml --data s3://bucket/cells
"""

from lensops.cli import main

if __name__ == "__main__":
    main("pipeline")
