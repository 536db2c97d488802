"""Score a folder, s3:// prefix or manifest of images with a registered version into parquet,
as `lensops batch-predict` does (same options; see --help).

    ray job submit --working-dir . -- python ray_jobs/batch_predict.py data/new --output predictions/
"""

from lensops.cli import main

if __name__ == "__main__":
    main("batch-predict")
