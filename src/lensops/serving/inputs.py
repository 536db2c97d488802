"""What the service accepts: request parsing. Every bad input becomes an
:class:`~lensops.serving.errors.ApiError` with a 4xx code, and the service keeps serving; the
image guards are :mod:`lensops.serving.uploads`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message, Receive

from lensops.serving.contract import INPUT_FIELDS, FeedbackBody, LabelFeedback, ValueFeedback
from lensops.serving.errors import ApiError
from lensops.serving.uploads import InputLimits, Prepared

FEEDBACK_MAX_BYTES = 64 * 1024


SINGLE_IMAGE = ("image",)
"""The inputs of a one-image task: its upload is multipart ``file`` or JSON ``image``."""


async def read_images(request: Request, limits: InputLimits, many: bool) -> list[bytes]:
    """The image bytes of a predict request: multipart ``file`` (``files`` when ``many``) or
    JSON ``{"image": base64}`` (``{"images": [...]}``)."""
    form_field, json_field = ("files", "images") if many else ("file", "image")
    content_type = _content_type(request)
    body = await _body(request, limits.max_bytes * (limits.max_items if many else 1))
    if content_type.startswith("multipart/form-data"):
        form = await _form(request, body)
        images, sent = [await item.read() for item in _uploads(form, form_field)], set(form.keys())
    else:
        document = _json_document(body)
        images, sent = _json_images(document, json_field, many), set(document)
    if not images:
        own = {form_field, json_field, "file", "image"}  # a batch route's fields, and one image's
        raise absent(sent, own, f"no image in field '{form_field}' or JSON key '{json_field}'")
    most = limits.max_items if many else 1
    if len(images) > most:
        raise ApiError("too_many_images", f"{len(images)} images; send at most {most}")
    return images


async def read_example(request: Request, limits: InputLimits, names: tuple[str, ...]) -> dict[str, bytes]:
    """The images of one example, by the task's input ``names``: a one-image task's as
    :func:`read_images` reads them; a task of several images takes each under its input name, as
    a multipart field or a JSON key of base64 (``before`` and ``after`` for a pair)."""
    if names == SINGLE_IMAGE:
        (data,) = await read_images(request, limits, many=False)
        return {"image": data}
    content_type = _content_type(request)
    body = await _body(request, limits.max_bytes * len(names))
    if content_type.startswith("multipart/form-data"):
        form = await _form(request, body)
        found = {name: [await item.read() for item in _uploads(form, name)] for name in names}
        sent = set(form.keys())
    else:
        document = _json_document(body)
        found = {name: [decode_base64(document[name])] for name in names if document.get(name) is not None}
        sent = set(document)
    missing = [name for name in names if not found.get(name)]
    if missing:
        wanted = " and ".join(f"'{name}'" for name in names)
        raise absent(sent, set(names), f"this model takes {wanted}; no image in {', '.join(missing)}")
    for name, images in found.items():
        if len(images) > 1:
            raise ApiError("too_many_images", f"{len(images)} images in '{name}'; send one")
    return {name: found[name][0] for name in names}


def _content_type(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/json")):
        raise ApiError(
            "unsupported_media_type",
            f"content type '{content_type or 'none'}': send multipart/form-data or application/json",
        )
    return content_type


async def _form(request: Request, body: bytes) -> FormData:
    try:
        return await Request(request.scope, _replay(body)).form()
    except (HTTPException, MultiPartException) as exc:  # starlette's own 400, without our error code
        why = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise ApiError("invalid_multipart", f"the multipart body cannot be parsed: {why}") from None


def _uploads(form: FormData, field: str) -> list[UploadFile]:
    """The files of a form field (a text value under the name is not an image)."""
    return [item for item in form.getlist(field) if hasattr(item, "read")]


async def read_feedback(request: Request, limits: InputLimits) -> LabelFeedback | ValueFeedback:
    """The JSON body of ``POST /feedback``."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ApiError("unsupported_media_type", "send feedback as application/json")
    body = await _body(request, FEEDBACK_MAX_BYTES)
    try:
        document = json.loads(body)
    except ValueError:
        raise ApiError("invalid_json", "request body is not valid JSON") from None
    if not isinstance(document, dict) or ("label" in document) == ("value" in document):
        raise ApiError("invalid_feedback", "send a JSON object with exactly one of 'label' (classification) or 'value'")
    try:
        return FeedbackBody.validate_python(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise ApiError("invalid_feedback", problems) from None


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes, whether or not the client
    declared its length: nothing larger is ever held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError("request_too_large", f"request has {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError("request_too_large", f"request has more than {limit} bytes; the limit is {limit}")
    return bytes(body)


def _replay(body: bytes) -> Receive:
    """An ASGI ``receive`` that hands over an already read body once."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _json_document(body: bytes) -> dict[str, Any]:
    """The JSON object of a body; an empty object when the body is other JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        raise ApiError("invalid_json", "request body is not valid JSON") from None
    return document if isinstance(document, dict) else {}


def absent(sent: set[str], own: set[str], detail: str) -> ApiError:
    """The error for a body without the served model's images: 422 ``wrong_inputs`` when it
    holds only the images of another kind of model (a pair sent to a classifier: well-formed by
    the schema, which declares both), else 400 ``missing_field``."""
    others = sorted(sent & INPUT_FIELDS - own)
    if others and not sent & own:
        return ApiError("wrong_inputs", f"the served model does not take {', '.join(others)}; {detail}")
    return ApiError("missing_field", detail)


def _json_images(document: dict[str, Any], field: str, many: bool) -> list[bytes]:
    value = document.get(field)
    if value is None:
        return []
    if many != isinstance(value, list):
        kind = "a list of base64 strings" if many else "a base64 string"
        raise ApiError("missing_field", f"'{field}' must be {kind}")
    return [decode_base64(v) for v in (value if many else [value])]


def decode_base64(text: object) -> bytes:
    if not isinstance(text, str) or not text:
        raise ApiError("missing_field", "expected a non-empty base64 string")
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("invalid_base64", f"image is not valid base64: {exc}") from None


def same_size(names: list[str], prepared: list[Prepared]) -> list[Prepared]:
    """``prepared`` when every image has the first one's size; 422 ``mismatched_inputs`` otherwise."""
    sizes = [(upload.facts["input_width"], upload.facts["input_height"]) for upload in prepared]
    if len(set(sizes)) > 1:
        shown = ", ".join(f"{name} {w}x{h}" for name, (w, h) in zip(names, sizes, strict=True))
        raise ApiError("mismatched_inputs", f"the images of one example must have one size: {shown}")
    return prepared
