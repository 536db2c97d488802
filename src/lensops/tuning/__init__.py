"""The tuning stage: sweep definitions (:mod:`~lensops.tuning.space`) run as Ray Tune trials, each
one Ray Train fit (:mod:`~lensops.tuning.sweep`).
"""
