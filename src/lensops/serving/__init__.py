"""The serving stage: a Ray Serve application of an HTTP ingress, a CPU preprocessing tier and
batched model replicas (:mod:`~lensops.serving.app`).
"""
