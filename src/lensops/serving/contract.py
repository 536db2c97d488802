"""The HTTP API as types: what each route takes and answers, and the one error model.

The routes parse their bodies themselves (a multipart upload or a JSON body, one or several
images), so FastAPI cannot infer the request schema; :func:`route_docs` declares it, with
every answer and error status, for the OpenAPI schema (published as ``docs/openapi.json``),
``/docs`` and clients generated from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from lensops.model.tasks import BUILT_IN
from lensops.serving.errors import STATUS, ApiError

ErrorCode = Literal[tuple(STATUS)]  # type: ignore[valid-type]


class ErrorBody(BaseModel):
    """Every error answer: a stable code and what to do about it."""

    error: ErrorCode = Field(description="Stable code; see the list of codes and statuses in the service's docs.")
    detail: str


class ModelBlock(BaseModel):
    name: str
    version: str
    alias: str | None = Field(description="The alias it answered as; null for a pinned version.")
    dataset_version: str
    run_id: str


class Answer(BaseModel):
    """One image's answer. Tasks may add fields (a regression answers a number, without probabilities)."""

    model_config = ConfigDict(extra="allow")

    prediction: str | float
    confidence: float | None
    probabilities: dict[str, float] | None = None
    model: ModelBlock


REQUEST_ID_FIELD = Field(description="The request's id: its X-Request-ID header, and the key of its log lines.")


class PredictAnswer(Answer):
    request_id: str = REQUEST_ID_FIELD


def _with_task_fields(answer: type[BaseModel]) -> list[type[BaseModel]]:
    """``answer``, and ``answer`` with the fields of each built-in task that adds some (a change
    mask, its regions): what ``/predict`` answers, by the served model's task."""
    return [
        answer,
        *(
            create_model(f"{task.__name__}{answer.__name__}", __base__=(answer, task.answer_fields))
            for task in BUILT_IN.values()
            if task.answer_fields is not None
        ),
    ]


PredictAnswers = Union[tuple(_with_task_fields(PredictAnswer))]  # type: ignore[valid-type]  # noqa: UP007


class Explanation(BaseModel):
    """Grad-CAM of one output: where in the image the network found evidence for it."""

    target: str = Field(description="The class explained (the predicted one unless `target` is given); `value`.")
    cam: list[list[float]] = Field(description="The raw map at the network's feature resolution, rows top down, 0..1.")
    overlay_png: str = Field(description="Base64 PNG: the model's input image under the map (blue: none, red: most).")


class ExplainAnswer(PredictAnswer):
    explanation: Explanation


class BatchItem(Answer):
    request_id: str = Field(description="This image's id in the prediction log: `<request id>/<index>`.")


def item_id(request_id: str, index: int) -> str:
    """The id one image of a ``/predict_batch`` request is logged (and given feedback) under."""
    return f"{request_id}/{index}"


class BatchAnswer(BaseModel):
    results: list[BatchItem | ErrorBody] = Field(description="One per image, in order; a bad image is an error entry.")
    request_id: str = REQUEST_ID_FIELD


class _Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, description="The prediction's request id (`<id>/<index>` in a batch).")


class LabelFeedback(_Feedback):
    """The true label of a classifier's logged prediction."""

    label: str

    def truth(self) -> str | float:
        return self.label


class ValueFeedback(_Feedback):
    """The true value of a regression model's logged prediction."""

    value: float

    def truth(self) -> str | float:
        return self.value


FeedbackBody = TypeAdapter(LabelFeedback | ValueFeedback)
"""``POST /feedback``'s body: a request id and exactly one of ``label`` and ``value``."""


class FeedbackModel(BaseModel):
    name: str
    version: str


class FeedbackAnswer(BaseModel):
    request_id: str
    model: FeedbackModel = Field(description="The version that made the prediction.")
    prediction: str | float = Field(description="What it predicted then.")
    metric: str = Field(description="The task's live metric, e.g. accuracy or mae.")
    score: float = Field(description="That metric for this one prediction (1 or 0 for accuracy).")


Base64 = Annotated[str, Field(min_length=1, json_schema_extra={"format": "byte"})]
"""A file's bytes in base64 (OpenAPI's ``byte`` format)."""


class ImageJSON(BaseModel):
    image: Base64 = Field(description="The image file, base64 (a data: URL prefix is accepted).")


class ImagesJSON(BaseModel):
    images: list[Base64] = Field(min_length=1, description="Image files, base64.")


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str | None = None
    reason: str | None = Field(None, description="Why the service is degraded or unavailable.")


class Classes(BaseModel):
    task: str
    classes: list[str]


class ModelDescription(BaseModel):
    name: str
    version: str
    inputs: list[str] = Field(description="The images one prediction takes: `image`, or e.g. `before` and `after`.")
    alias: str | None
    dataset_version: str
    run_id: str
    metrics: dict[str, float]
    spec: dict[str, Any]
    challenger: dict[str, Any] | None


class Reload(BaseModel):
    old_version: str | None
    new_version: str
    alias: str


UPLOAD = {"type": "string", "format": "binary"}
BASE64 = {"type": "string", "format": "byte", "minLength": 1}
SEVERAL_INPUTS = sorted({task.inputs for task in BUILT_IN.values()} - {("image",)})
"""The inputs of each built-in task that takes several images: each is a field of its own."""
FORM_FIELDS = ("file", *(name for inputs in SEVERAL_INPUTS for name in inputs))
"""The multipart fields a prediction's images may come in, whichever model is served."""
INPUT_FIELDS = frozenset({"image", *FORM_FIELDS})
"""Every field or JSON key a prediction's image may come in."""
IMAGE_BODY = {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": UPLOAD}}},
    "application/json": {"schema": ImageJSON.model_json_schema()},
}


def _form() -> dict[str, Any]:
    """One multipart object with a field per input name (Swagger UI draws a file chooser per
    field of an object, none for a choice of objects): which ones the served model takes is in
    the description and in ``/model``'s ``inputs``."""
    pairs = "; ".join(" and ".join(f"`{name}`" for name in inputs) for inputs in SEVERAL_INPUTS)
    what = f"One image as `file`, or for a model of several images one file per input ({pairs})."
    return {"type": "object", "properties": dict.fromkeys(FORM_FIELDS, UPLOAD), "minProperties": 1, "description": what}


def _json(names: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "required": list(names), "properties": dict.fromkeys(names, BASE64)}


PREDICT_BODY = {
    "multipart/form-data": {"schema": _form()},
    "application/json": {"schema": {"anyOf": [ImageJSON.model_json_schema(), *map(_json, SEVERAL_INPUTS)]}},
}
"""One image (``file``, JSON ``image``), or the images of a task of several inputs by name
(``before`` and ``after``): which one the served model's task takes (``GET /model``)."""


PREDICT_BATCH_BODY = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["files"],
            "properties": {"files": {"type": "array", "items": UPLOAD, "minItems": 1}},
        }
    },
    "application/json": {"schema": ImagesJSON.model_json_schema()},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
MEANING = {
    400: "The request is malformed (a missing field, bad JSON or base64), or asks what the served model does not "
    "do (a batch or an explanation of a model of several images).",
    401: "An API key (or the reload token) is missing or wrong.",
    403: "Reloads are disabled (no token configured).",
    404: "No such version or alias in the registry, or no logged prediction with that request id.",
    413: "The request, an image or the number of images is over its limit.",
    415: "Not an image, or a format or content type the service does not take.",
    422: "An image that cannot be decoded (truncated, corrupt, too small), images of one example that differ in "
    "size, the images of another kind of model (a pair to a classifier), a GeoTIFF answer asked of a model or an "
    "upload that has none, an unknown answer format, or a label the model does not know.",
    429: "Over the rate limit.",
    502: "The new version cannot be loaded.",
    503: "No model loaded yet, the registry or the prediction log unreachable, or the service overloaded.",
    504: "The answer did not come within the request's deadline.",
}


def route_docs(
    answer: type[BaseModel],
    statuses: set[int],
    body: dict | None = None,
    headers: dict | None = None,
    other_answers: dict | None = None,
    parameters: list[dict] | None = None,
) -> dict[str, Any]:
    """FastAPI route arguments documenting ``answer`` (200, with ``headers``; and answers of
    ``other_answers`` media types), the error ``statuses``, the request ``body`` and query
    ``parameters`` the route reads itself."""
    responses: dict[int, dict[str, Any]] = {200: {"model": answer, "headers": headers or {}}}
    if other_answers:
        responses[200]["content"] = other_answers
    for status in sorted(statuses):
        responses[status] = {"model": ErrorBody, "description": MEANING[status]}
        if status in (429, 503):
            responses[status]["headers"] = RETRY_AFTER
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": body}} if body else {}
    if parameters:
        extra["parameters"] = parameters
    return {"responses": responses, "openapi_extra": extra}


ANSWER_FORMATS = ("json", "geotiff")
FORMAT_PARAMETER = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "`json` (the default): the answer; `geotiff`: the answer's image (a change mask) as a "
    "GeoTIFF on the map grid of the (last) upload, which must be a georeferenced GeoTIFF.",
    # a plain string (checked by the route, with the error model): Swagger UI sends `{}` for an
    # enum select left at its blank entry
    "schema": {"type": "string"},
}
GEOTIFF_ANSWER = {"image/tiff": {"schema": UPLOAD}}
"""``?format=geotiff``: the answer's image as a GeoTIFF file."""
PREDICT_ERRORS = {400, 401, 413, 415, 422, 429, 503, 504}
FEEDBACK_ERRORS = {400, 401, 404, 413, 415, 422, 429, 503}
FEEDBACK_BODY = {
    "application/json": {"schema": {"anyOf": [LabelFeedback.model_json_schema(), ValueFeedback.model_json_schema()]}}
}
REQUEST_ID = {
    "X-Request-ID": {
        "description": "The request's id (the client's own, if it sent one).",
        "schema": {"type": "string"},
    }
}


def answer_format(value: str | None) -> str:
    """The ``format`` a request asks for: ``json`` when absent or empty; 422 ``unknown_format``
    for anything but :data:`ANSWER_FORMATS`."""
    if not value:
        return "json"
    if value not in ANSWER_FORMATS:
        raise ApiError("unknown_format", f"format '{value[:40]}': use {' or '.join(ANSWER_FORMATS)}")
    return value


def health_docs() -> dict[str, Any]:
    """``/health`` answers its own body in both cases: 200 (ok, degraded) and 503 (unavailable)."""
    return {"responses": {200: {"model": Health}, 503: {"model": Health, "description": "No model can answer."}}}
