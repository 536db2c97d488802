"""The one place that talks to MLflow: runs (:mod:`~lensops.tracking.runs`), the model registry
(:mod:`~lensops.tracking.registry`) and champion/challenger promotion.
"""
