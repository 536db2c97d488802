"""What the service accepts: request parsing, image guards and the error model, with no server."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle

import numpy as np
import pytest
from factories import encode, png_header_only
from PIL import Image
from starlette.requests import Request
from starlette.types import Message
from urllib3 import encode_multipart_formdata

from lensops.config import ServeConfig
from lensops.model.preprocess import PreprocessSpec
from lensops.serving.errors import STATUS, ApiError
from lensops.serving.inputs import decode_base64, read_example, read_images, same_size
from lensops.serving.uploads import InputLimits, examine, prepare

LIMITS = InputLimits(max_bytes=100_000, min_side=16, max_side=512, max_pixels=512 * 512, max_items=3)
SPEC = PreprocessSpec(image_size=24, resize_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def noise_png(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"), fmt)


def make_request(body: bytes, content_type: str | None, content_length: int | None = None) -> Request:
    """A Starlette request over an ASGI scope whose ``receive`` hands out ``body`` once."""
    headers = [(b"content-length", str(len(body) if content_length is None else content_length).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": headers}
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request(scope, receive)


def json_request(document: object) -> Request:
    return make_request(json.dumps(document).encode(), "application/json")


def multipart_request(fields: list[tuple[str, tuple[str, bytes, str] | str]]) -> Request:
    body, content_type = encode_multipart_formdata(fields)
    return make_request(body, content_type)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read(request: Request, many: bool = False, limits: InputLimits = LIMITS) -> list[bytes]:
    return asyncio.run(read_images(request, limits, many))


def read_error(request: Request, many: bool = False, limits: InputLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as info:
        read(request, many, limits)
    return info.value


def prepare_error(data: bytes, limits: InputLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as info:
        prepare(data, SPEC, limits)
    return info.value


# --- limits from the config ---------------------------------------------------------------


def test_input_limits_come_from_the_serve_config() -> None:
    cfg = ServeConfig(max_request_bytes=1000, min_side=8, max_side=256, max_pixels=4096, max_batch_items=5)

    assert InputLimits.from_config(cfg) == InputLimits(
        max_bytes=1000, min_side=8, max_side=256, max_pixels=4096, max_items=5
    )


# --- reading requests ---------------------------------------------------------------------


def test_a_multipart_file_is_read() -> None:
    image = noise_png()

    assert read(multipart_request([("file", ("a.png", image, "image/png"))])) == [image]


def test_a_multipart_batch_reads_every_file_in_order() -> None:
    images = [noise_png(seed=i) for i in range(3)]
    fields: list[tuple[str, tuple[str, bytes, str] | str]] = [
        ("files", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)
    ]

    assert read(multipart_request(fields), many=True) == images


def test_a_multipart_text_field_is_not_an_image() -> None:
    error = read_error(multipart_request([("file", "not a file")]))

    assert (error.code, error.status) == ("missing_field", 400)
    assert error.detail == "no image in field 'file' or JSON key 'image'"


def test_a_multipart_file_under_another_name_is_a_missing_field() -> None:
    error = read_error(multipart_request([("upload", ("a.png", noise_png(), "image/png"))]))

    assert error.code == "missing_field"


def test_a_body_that_is_not_multipart_after_all_is_invalid_multipart() -> None:
    error = read_error(make_request(b"False--cut--\r\n", "multipart/form-data; boundary=cut"))

    assert (error.code, error.status) == ("invalid_multipart", 400)
    assert error.detail.startswith("the multipart body cannot be parsed: ")


def test_json_base64_is_read() -> None:
    image = noise_png()

    assert read(json_request({"image": b64(image)})) == [image]


def test_json_base64_with_a_data_url_prefix_is_read() -> None:
    image = noise_png()

    assert read(json_request({"image": "data:image/png;base64," + b64(image)})) == [image]


def test_a_json_batch_reads_every_image_in_order() -> None:
    images = [noise_png(seed=i) for i in range(3)]
    texts = [b64(images[0]), "data:image/png;base64," + b64(images[1]), b64(images[2])]

    assert read(json_request({"images": texts}), many=True) == images


def test_a_content_type_with_a_charset_is_accepted() -> None:
    image = noise_png()
    body = json.dumps({"image": b64(image)}).encode()

    assert read(make_request(body, "application/json; charset=utf-8")) == [image]


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/x-www-form-urlencoded"])
def test_another_content_type_is_unsupported_media_type(content_type: str) -> None:
    error = read_error(make_request(b"abc", content_type))

    assert (error.code, error.status) == ("unsupported_media_type", 415)
    assert error.detail == f"content type '{content_type}': send multipart/form-data or application/json"


def test_no_content_type_is_unsupported_media_type_naming_none() -> None:
    error = read_error(make_request(b"abc", None))

    assert error.code == "unsupported_media_type"
    assert error.detail == "content type 'none': send multipart/form-data or application/json"


def test_invalid_json_is_invalid_json() -> None:
    error = read_error(make_request(b'{"image": ', "application/json"))

    assert (error.code, error.status, error.detail) == ("invalid_json", 400, "request body is not valid JSON")


@pytest.mark.parametrize("document", [{}, {"picture": "aGVsbG8="}, {"image": None}, ["aGVsbG8="], "aGVsbG8="])
def test_json_without_the_image_key_is_a_missing_field(document: object) -> None:
    error = read_error(json_request(document))

    assert (error.code, error.status) == ("missing_field", 400)
    assert error.detail == "no image in field 'file' or JSON key 'image'"


def test_a_batch_under_the_single_key_is_a_missing_field() -> None:
    error = read_error(json_request({"image": [b64(noise_png())]}), many=True)

    assert error.code == "missing_field"
    assert error.detail == "no image in field 'files' or JSON key 'images'"


def test_a_list_where_one_string_is_expected_is_a_missing_field() -> None:
    error = read_error(json_request({"image": [b64(noise_png())]}))

    assert (error.code, error.detail) == ("missing_field", "'image' must be a base64 string")


def test_a_string_where_a_list_is_expected_is_a_missing_field() -> None:
    error = read_error(json_request({"images": b64(noise_png())}), many=True)

    assert (error.code, error.detail) == ("missing_field", "'images' must be a list of base64 strings")


def test_an_empty_batch_is_a_missing_field() -> None:
    error = read_error(json_request({"images": []}), many=True)

    assert error.code == "missing_field"


@pytest.mark.parametrize("item", ["", 42, None, {"data": "aGVsbG8="}])
def test_a_batch_item_that_is_not_a_non_empty_string_is_a_missing_field(item: object) -> None:
    error = read_error(json_request({"images": [b64(noise_png()), item]}), many=True)

    assert (error.code, error.detail) == ("missing_field", "expected a non-empty base64 string")


def test_bad_base64_in_a_request_is_invalid_base64() -> None:
    error = read_error(json_request({"image": "not base64!"}))

    assert (error.code, error.status) == ("invalid_base64", 400)
    assert error.detail.startswith("image is not valid base64: ")


def test_a_content_length_over_the_limit_is_request_too_large() -> None:
    limits = LIMITS.model_copy(update={"max_bytes": 100})
    body = json.dumps({"image": b64(b"x" * 200)}).encode()

    error = read_error(make_request(body, "application/json"), limits=limits)

    assert (error.code, error.status) == ("request_too_large", 413)
    assert error.detail == f"request has {len(body)} bytes; the limit is 100"


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    error = read_error(make_request(b"", "application/json", content_length=LIMITS.max_bytes + 1))

    assert error.code == "request_too_large"


def test_a_batch_may_be_max_items_times_max_bytes() -> None:
    limits = LIMITS.model_copy(update={"max_bytes": 1000, "max_items": 3})
    body = json.dumps({"images": [b64(b"x" * 500)] * 3}).encode()
    assert 1000 < len(body) <= 3000

    assert read(make_request(body, "application/json"), many=True, limits=limits) == [b"x" * 500] * 3
    error = read_error(make_request(body, "application/json", content_length=3001), many=True, limits=limits)
    assert error.detail == "request has 3001 bytes; the limit is 3000"


def test_too_many_images_in_a_batch_is_too_many_images() -> None:
    error = read_error(json_request({"images": [b64(noise_png(seed=i)) for i in range(4)]}), many=True)

    assert (error.code, error.status) == ("too_many_images", 413)
    assert error.detail == "4 images; send at most 3"


def test_several_multipart_files_on_the_single_endpoint_is_too_many_images() -> None:
    image = noise_png()
    fields: list[tuple[str, tuple[str, bytes, str] | str]] = [("file", ("a.png", image, "image/png"))] * 2

    error = read_error(multipart_request(fields))

    assert (error.code, error.detail) == ("too_many_images", "2 images; send at most 1")


# --- the images of one example (a pair) -------------------------------------------------

PAIR = ("before", "after")


def read_pair(request: Request) -> dict[str, bytes]:
    return asyncio.run(read_example(request, LIMITS, PAIR))


def read_pair_error(request: Request) -> ApiError:
    with pytest.raises(ApiError) as info:
        read_pair(request)
    return info.value


def test_a_one_image_task_reads_its_file_as_ever() -> None:
    image = noise_png()
    request = multipart_request([("file", ("a.png", image, "image/png"))])

    assert asyncio.run(read_example(request, LIMITS, ("image",))) == {"image": image}


def test_a_pair_is_read_from_multipart_fields_or_json_keys_named_after_the_inputs() -> None:
    before, after = noise_png(seed=1), noise_png(seed=2)
    form = multipart_request([("after", ("a.png", after, "image/png")), ("before", ("b.png", before, "image/png"))])

    assert read_pair(form) == {"before": before, "after": after}
    assert read_pair(json_request({"before": b64(before), "after": b64(after)})) == {"before": before, "after": after}


@pytest.mark.parametrize("sent", [{"before": "x"}, {"other": "x"}, []])
def test_a_pair_without_its_after_image_is_a_missing_field(sent: object) -> None:
    document = {k: b64(noise_png()) for k in sent} if isinstance(sent, dict) else sent
    error = read_pair_error(json_request(document))

    assert (error.code, error.status) == ("missing_field", 400)
    assert error.detail.startswith("this model takes 'before' and 'after'; no image in ")
    assert "after" in error.detail.rsplit("no image in ", 1)[1]


def test_the_images_of_another_kind_of_model_are_wrong_inputs_not_a_malformed_request() -> None:
    to_pair = read_pair_error(json_request({"image": b64(noise_png())}))
    to_single = read_error(multipart_request([("before", ("b.png", noise_png(), "image/png"))]))

    assert (to_pair.code, to_pair.status) == ("wrong_inputs", 422)
    assert to_pair.detail.startswith("the served model does not take image; this model takes 'before' and 'after'")
    assert (to_single.code, to_single.detail) == (
        "wrong_inputs",
        "the served model does not take before; no image in field 'file' or JSON key 'image'",
    )


def test_two_files_under_one_input_are_refused() -> None:
    fields: list[tuple[str, tuple[str, bytes, str] | str]] = [
        ("before", ("1.png", noise_png(seed=1), "image/png")),
        ("before", ("2.png", noise_png(seed=2), "image/png")),
        ("after", ("3.png", noise_png(seed=3), "image/png")),
    ]
    error = read_pair_error(multipart_request(fields))

    assert (error.code, error.detail) == ("too_many_images", "2 images in 'before'; send one")


def test_a_pair_body_is_limited_to_one_image_per_input() -> None:
    error = read_pair_error(make_request(b"x", "application/json", content_length=2 * LIMITS.max_bytes + 1))

    assert error.code == "request_too_large"


def test_the_images_of_a_pair_must_have_one_size() -> None:
    same = [examine(noise_png(64, 48, seed), SPEC, LIMITS) for seed in (1, 2)]
    other = examine(noise_png(48, 64), SPEC, LIMITS)

    assert same_size(["before", "after"], same) == same
    with pytest.raises(ApiError) as info:
        same_size(["before", "after"], [same[0], other])
    assert (info.value.code, info.value.status) == ("mismatched_inputs", 422)
    assert info.value.detail == "the images of one example must have one size: before 64x48, after 48x64"


# --- decode_base64 ------------------------------------------------------------------------


def test_decode_base64_reads_plain_and_data_url_text() -> None:
    assert decode_base64("aGVsbG8=") == b"hello"
    assert decode_base64("data:image/png;base64,aGVsbG8=") == b"hello"


@pytest.mark.parametrize("text", ["aGVsbG8", "aGVs bG8=", "aGVsbG8=!", "héllo==="])
def test_decode_base64_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ApiError) as info:
        decode_base64(text)

    assert (info.value.code, info.value.status) == ("invalid_base64", 400)


@pytest.mark.parametrize("value", ["", None, 12, b"aGVsbG8=", ["aGVsbG8="]])
def test_decode_base64_refuses_anything_but_a_non_empty_string(value: object) -> None:
    with pytest.raises(ApiError) as info:
        decode_base64(value)

    assert (info.value.code, info.value.detail) == ("missing_field", "expected a non-empty base64 string")


# --- prepare ------------------------------------------------------------------------------


def test_prepare_turns_a_good_png_into_a_uint8_chw_array() -> None:
    array = prepare(noise_png(64, 48), SPEC, LIMITS)

    assert array.shape == (3, 24, 24)
    assert array.dtype == np.uint8


def test_prepare_expands_a_grayscale_image_to_three_channels() -> None:
    gray = encode(Image.fromarray(np.full((40, 40), 200, dtype=np.uint8), "L"))

    array = prepare(gray, SPEC, LIMITS)

    assert array.shape == (3, 24, 24)
    assert (array == 200).all()


def test_prepare_refuses_a_tiny_image_as_too_small() -> None:
    error = prepare_error(noise_png(8, 40))

    assert (error.code, error.status) == ("too_small", 422)
    assert error.detail == "8x40 is smaller than 16 px on a side"


def test_prepare_refuses_a_cut_off_file_as_truncated() -> None:
    data = noise_png(64, 64)

    error = prepare_error(data[: len(data) // 2])

    assert (error.code, error.status) == ("truncated", 422)


def test_prepare_refuses_a_decompression_bomb_header_as_too_large() -> None:
    error = prepare_error(png_header_only(30000, 30000))

    assert (error.code, error.status) == ("too_large", 413)


def test_prepare_refuses_more_pixels_than_max_pixels_before_decoding() -> None:
    error = prepare_error(png_header_only(600, 600), LIMITS.model_copy(update={"max_side": 1000}))

    assert (error.code, error.detail) == ("too_large", f"600x600 exceeds {512 * 512} pixels")


def test_prepare_refuses_an_image_wider_than_max_side_as_too_large() -> None:
    error = prepare_error(noise_png(600, 20))

    assert (error.code, error.status) == ("too_large", 413)
    assert error.detail == "600x20 exceeds 512 px on a side"


def test_prepare_refuses_a_non_image_as_not_image() -> None:
    error = prepare_error(b"this is a text file, not a picture")

    assert (error.code, error.status) == ("not_image", 415)


def test_prepare_refuses_an_image_format_outside_the_allowed_ones() -> None:
    error = prepare_error(noise_png(fmt="PPM"))

    assert (error.code, error.status) == ("unsupported_format", 415)
    assert error.detail.startswith("PPM images are not accepted; use BMP, GIF, JPEG, PNG, TIFF, WEBP")


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF", "WEBP", "GIF"])
def test_prepare_accepts_every_allowed_format(fmt: str) -> None:
    assert prepare(noise_png(fmt=fmt), SPEC, LIMITS).shape == (3, 24, 24)


def test_prepare_refuses_more_bytes_than_max_bytes_as_request_too_large() -> None:
    data = noise_png(64, 64)
    limits = LIMITS.model_copy(update={"max_bytes": len(data) - 1})

    error = prepare_error(data, limits)

    assert (error.code, error.status) == ("request_too_large", 413)
    assert error.detail == f"image has {len(data)} bytes; the limit is {len(data) - 1}"


# --- the error model ----------------------------------------------------------------------


def test_an_api_error_pickles_with_its_code_and_detail() -> None:
    error = ApiError("too_small", "8x8 is smaller than 32 px on a side")

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is ApiError
    assert (copy.code, copy.detail, copy.status) == ("too_small", "8x8 is smaller than 32 px on a side", 422)
    assert copy.args == ("too_small", "8x8 is smaller than 32 px on a side", None)


def test_an_api_error_body_is_error_and_detail() -> None:
    error = ApiError("no_such_version", "no version '9'")

    assert error.body() == {"error": "no_such_version", "detail": "no version '9'"}
    assert error.status == 404


def test_every_status_is_a_client_or_server_error() -> None:
    assert {code: status for code, status in STATUS.items() if not 400 <= status < 600} == {}
    assert set(STATUS) >= {"not_image", "too_large", "unreadable", "truncated", "too_small"}
