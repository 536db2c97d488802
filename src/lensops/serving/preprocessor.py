"""The CPU tier: one upload checked and decoded with the model's own preprocessing spec into
uint8 (never float32), with the facts the prediction log keeps about it.

Its replicas import neither torch nor MLflow (:mod:`lensops.serving.uploads`): one starts
without their import, about 6 s of CPU on 2 cores.
"""

from __future__ import annotations

from ray import serve

from lensops.model.preprocess import PreprocessSpec
from lensops.serving.errors import ApiError
from lensops.serving.uploads import InputLimits, Prepared, examine


@serve.deployment
class Preprocessor:
    """Validate and decode one image into the model's uint8 input."""

    def __init__(self, limits: dict[str, int]):
        self.limits = InputLimits.model_validate(limits)

    def __call__(self, data: bytes, spec: PreprocessSpec) -> Prepared | ApiError:
        try:
            return examine(data, spec, self.limits)
        except ApiError as exc:  # returned, not raised: a rejected image is an answer, not a failure
            return exc
