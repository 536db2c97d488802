"""Check new data for drift against the champion's reference profile, as `lensops monitor`
does (same options; see --help), e.g. every 15 minutes on the cluster, retraining on drift:

    ray job submit --working-dir . -- python ray_jobs/monitor.py --every 15m \
        --on-drift retrain --retrain-data s3://bucket/labelled
"""

from lensops.cli import main

if __name__ == "__main__":
    main("monitor")
