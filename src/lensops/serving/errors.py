"""The service's one error model: a stable code, its HTTP status, and a detail saying what to fix.

Every non-2xx answer of the service is ``{"error": <code>, "detail": <text>}`` with the status
listed here, so clients can switch on the code and people can read the detail. Answers that
ask the client to come back later (429, 503) carry ``Retry-After``.
"""

from __future__ import annotations

import math

from lensops.data.images import Issue

STATUS: dict[str, int] = {
    # the request itself
    "missing_field": 400,
    "invalid_base64": 400,
    "invalid_json": 400,
    "invalid_multipart": 400,
    "unauthorized": 401,
    "reload_disabled": 403,
    "request_too_large": 413,
    "too_many_images": 413,
    "unsupported_media_type": 415,
    "unsupported_for_model": 400,
    "rate_limited": 429,
    # feedback
    "invalid_feedback": 400,
    "feedback_disabled": 404,
    "unknown_request": 404,
    "unknown_label": 422,
    "log_unavailable": 503,
    # the image (the training data's own rules)
    Issue.NOT_IMAGE.value: 415,
    Issue.TOO_LARGE.value: 413,
    Issue.UNREADABLE.value: 422,
    Issue.TRUNCATED.value: 422,
    Issue.TOO_SMALL.value: 422,
    Issue.UNSUPPORTED_FORMAT.value: 415,
    "mismatched_inputs": 422,
    "wrong_inputs": 422,
    "geotiff_unavailable": 422,
    "unknown_format": 422,
    # the model behind the service
    "no_such_version": 404,
    "model_load_failed": 502,
    "registry_unavailable": 503,
    "model_unavailable": 503,
    "overloaded": 503,
    "replica_unavailable": 503,
    "timeout": 504,
}


RETRY_AFTER_S: dict[str, float] = {
    "rate_limited": 1,
    "overloaded": 1,
    "replica_unavailable": 1,
    "model_unavailable": 5,
    "registry_unavailable": 10,
    "log_unavailable": 10,
}
"""When a client should try again after an answer with this code (``Retry-After``), unless the
error says otherwise."""


class ApiError(Exception):
    """A request the service answers with an error: ``code`` is stable, ``detail`` says what to fix."""

    def __init__(self, code: str, detail: str, retry_after: float | None = None):
        super().__init__(code, detail, retry_after)  # all in args, so the error pickles across Ray
        self.code = code
        self.detail = detail
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds (at least 1) when the client should come back later."""
        wait = self.retry_after if self.retry_after is not None else RETRY_AFTER_S.get(self.code)
        return {} if wait is None else {"Retry-After": str(max(1, math.ceil(wait)))}
