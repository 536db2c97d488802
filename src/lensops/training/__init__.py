"""The training stage: Ray Train workers (:mod:`~lensops.training.loop`) driven by
:func:`lensops.training.fit.fit`, evaluated on the test split and registered.
"""
