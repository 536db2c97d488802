"""The earlier name of ray_jobs/promote.py, kept so that existing job definitions keep working."""

from lensops.cli import main

if __name__ == "__main__":
    main("promote")
