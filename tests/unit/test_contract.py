"""The service's typed HTTP contract: the published schema is the one the code serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lensops.serving import contract
from lensops.serving.api import api
from lensops.serving.errors import STATUS, ApiError

REPO = Path(__file__).resolve().parents[2]
SCHEMA = api.openapi()


def test_the_published_schema_is_the_one_the_service_serves() -> None:
    published = json.loads((REPO / "docs" / "openapi.json").read_text())

    assert published == SCHEMA, "docs/openapi.json is stale: run `lensops openapi > docs/openapi.json`"


@pytest.mark.parametrize("path", ["/predict", "/explain", "/predict_batch"])
def test_predictions_take_a_file_upload_or_a_json_body_and_document_every_error(path: str) -> None:
    operation = SCHEMA["paths"][path]["post"]
    content = operation["requestBody"]["content"]

    assert set(content) == {"multipart/form-data", "application/json"}
    for upload in content["multipart/form-data"]["schema"]["properties"].values():
        assert (upload.get("items") or upload)["format"] == "binary"
    assert {"200", "400", "401", "413", "415", "422", "429", "503", "504"} <= set(operation["responses"])
    assert "X-Request-ID" in operation["responses"]["200"]["headers"]


def test_answers_that_say_come_back_later_declare_retry_after() -> None:
    for path, methods in SCHEMA["paths"].items():
        for method, operation in methods.items():
            for status in {"429", "503"} & set(operation["responses"]) - ({"503"} if path == "/health" else set()):
                assert "Retry-After" in operation["responses"][status]["headers"], f"{method} {path} {status}"


def test_every_error_code_is_in_the_schema_and_every_documented_status_has_codes() -> None:
    codes = SCHEMA["components"]["schemas"]["ErrorBody"]["properties"]["error"]["enum"]

    assert set(codes) == set(STATUS)
    documented = {
        int(status)
        for methods in SCHEMA["paths"].values()
        for operation in methods.values()
        for status in operation["responses"]
        if status != "200"
    }
    assert documented <= set(STATUS.values())


def test_health_answers_its_own_body_when_unavailable() -> None:
    responses = SCHEMA["paths"]["/health"]["get"]["responses"]

    assert responses["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}


def test_predict_takes_one_image_or_a_pair_and_declares_the_change_answer() -> None:
    operation = SCHEMA["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    form = content["multipart/form-data"]["schema"]
    bodies = [sorted(body["required"]) for body in content["application/json"]["schema"]["anyOf"]]
    answers = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    change = SCHEMA["components"]["schemas"]["ChangeDetectionPredictAnswer"]

    assert bodies == [["image"], ["after", "before"]]
    assert set(form["properties"]) == {"file", "before", "after"}  # one object: a file chooser each in /docs
    assert "`before` and `after`" in form["description"]
    assert {"$ref": "#/components/schemas/ChangeDetectionPredictAnswer"} in answers
    assert {"mask", "changed_fraction", "regions", "prediction", "model", "request_id"} <= set(change["required"])
    assert change["properties"]["mask"]["format"] == "byte"


def test_the_answer_format_is_json_unless_geotiff_is_asked_and_nothing_else_is_taken() -> None:
    assert [contract.answer_format(value) for value in (None, "", "json", "geotiff")] == [
        "json",
        "json",
        "json",
        "geotiff",
    ]
    with pytest.raises(ApiError) as info:
        contract.answer_format("{}")
    assert (info.value.code, info.value.status, info.value.detail) == (
        "unknown_format",
        422,
        "format '{}': use json or geotiff",
    )
    assert SCHEMA["paths"]["/predict"]["post"]["parameters"][0]["name"] == "format"
