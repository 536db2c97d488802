"""The service's one error model: a stable code, its HTTP status, and a detail saying what to fix.

Every non-2xx answer of the service is ``{"error": <code>, "detail": <text>}`` with the status
listed here, so clients can switch on the code and people can read the detail.
"""

from __future__ import annotations

from lensops.data.images import Issue

STATUS: dict[str, int] = {
    # the request itself
    "missing_field": 400,
    "invalid_base64": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "reload_disabled": 403,
    "request_too_large": 413,
    "too_many_images": 413,
    "unsupported_media_type": 415,
    "unsupported_format": 415,
    # the image (the training data's own rules)
    Issue.NOT_IMAGE.value: 415,
    Issue.TOO_LARGE.value: 413,
    Issue.UNREADABLE.value: 422,
    Issue.TRUNCATED.value: 422,
    Issue.TOO_SMALL.value: 422,
    # the model behind the service
    "no_such_version": 404,
    "model_load_failed": 502,
    "registry_unavailable": 503,
    "model_unavailable": 503,
}


class ApiError(Exception):
    """A request the service answers with an error: ``code`` is stable, ``detail`` says what to fix."""

    def __init__(self, code: str, detail: str):
        super().__init__(code, detail)  # both in args, so the error pickles across Ray
        self.code = code
        self.detail = detail

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}
