"""The Serve application over real HTTP on a real local Ray: answers, guards, hot swap."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from browser import chromium
from factories import encode, png_header_only
from metrics_page import metric_total
from PIL import Image
from processes import listening, processes_named
from ray import serve
from ray.serve.schema import ServeDeploySchema
from shell import VENV_BIN, user_env
from traffic import RequestLoop

from lensops.config import LensopsConfig
from lensops.model import artifact
from lensops.model.preprocess import to_uint8
from lensops.runtime import free_port
from lensops.scoring import parts
from lensops.scoring.batch import batch_predict
from lensops.serving.app import CPUS, build, run_local
from lensops.tracking import registry, runs
from lensops.tracking.registry import load_predictor
from lensops.training.fit import TrainOutcome
from lensops.waiting import http_ok, wait_until

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
NAME = "test-serve"
CHALLENGER_NAME = "test-challenger"
TOKEN = "test-reload-token"
MAX_REQUEST_BYTES = 400_000


@pytest.fixture(scope="module")
def first_version(classification_run: TrainOutcome, mlflow_uri: str) -> str:
    """A registered model of its own, so swapping it disturbs no other test."""
    trained = registry.find(mlflow_uri, classification_run.model_name, classification_run.version)
    version = registry.register(mlflow_uri, NAME, trained.run_id, trained.source, {})
    registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, version.version)
    return version.version


@pytest.fixture(scope="module")
def base_url(ray_cluster: None, classification_cfg: LensopsConfig, first_version: str) -> Iterator[str]:
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = NAME
    cfg.serve.watch_interval_s = 0
    cfg.serve.max_request_bytes = MAX_REQUEST_BYTES
    cfg.serve.max_replicas = 1
    yield run_local(cfg, port=free_port(), ingress_env={"LENSOPS_RELOAD_TOKEN": TOKEN})
    serve.shutdown()


def _examples(training_dir: Path, label: str, count: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((training_dir / label).glob("*.png"))[:count]]


def test_health_is_ready_with_the_champion_loaded(base_url: str, first_version: str) -> None:
    response = requests.get(f"{base_url}/health", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": first_version}


def test_predict_multipart_answers_with_label_confidence_and_model(
    base_url: str, training_dir: Path, first_version: str
) -> None:
    for label in ("clean", "dusty"):
        for data in _examples(training_dir, label, 4):
            response = requests.post(f"{base_url}/predict", files={"file": ("x.png", data, "image/png")}, timeout=60)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert set(answer) == {"prediction", "confidence", "probabilities", "model", "request_id"}
            assert answer["request_id"] and answer["request_id"] == response.headers["X-Request-ID"]
            assert set(answer["probabilities"]) == {"clean", "dusty"}
            assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert answer["confidence"] == max(answer["probabilities"].values())
            assert answer["probabilities"][answer["prediction"]] == answer["confidence"]
            assert answer["model"]["name"] == NAME
            assert answer["model"]["version"] == first_version
            assert answer["model"]["alias"] == "champion"
    # which label is right is the model's business: the answers equal the registered model's
    # own (test_answers_match_offline_inference_of_the_same_model), whose test accuracy
    # test_training.py holds to 0.85; 8 images cannot tell an 85% model from a 95% one


def test_json_base64_gives_the_same_answer_as_multipart(base_url: str, training_dir: Path) -> None:
    data = _examples(training_dir, "dusty", 1)[0]
    multipart = requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, timeout=60).json()
    as_json = requests.post(f"{base_url}/predict", json={"image": base64.b64encode(data).decode()}, timeout=60).json()
    assert multipart.pop("request_id") != as_json.pop("request_id")
    assert as_json == multipart


def test_a_request_id_the_client_sends_is_kept_in_the_answer_and_its_header(base_url: str, training_dir: Path) -> None:
    data = _examples(training_dir, "clean", 1)[0]
    headers = {"X-Request-ID": "client-chosen-id-42"}
    response = requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, headers=headers, timeout=60)
    assert response.json()["request_id"] == "client-chosen-id-42"
    assert response.headers["X-Request-ID"] == "client-chosen-id-42"


def test_every_tier_logs_a_request_under_its_id(base_url: str, training_dir: Path, serve_logs: Path) -> None:
    request_id = f"log-probe-{time.time_ns()}"
    data = _examples(training_dir, "dusty", 1)[0]
    headers = {"X-Request-ID": request_id}
    assert requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, headers=headers, timeout=60).ok

    def tiers_that_logged_it() -> set[str]:
        logged = {path for path in serve_logs.glob("replica_lensops_*.log") if request_id in path.read_text("utf-8")}
        return {path.name.split("_")[2] for path in logged}

    wait_until(lambda: tiers_that_logged_it() == {"Ingress", "Preprocessor", "Model"}, 30, "the id in every tier's log")


def test_batch_keeps_order_and_isolates_a_bad_item(base_url: str, training_dir: Path) -> None:
    clean, dusty = _examples(training_dir, "clean", 1)[0], _examples(training_dir, "dusty", 1)[0]
    files = [("files", ("a.png", clean)), ("files", ("b.png", b"not an image")), ("files", ("c.png", dusty))]
    response = requests.post(f"{base_url}/predict_batch", files=files, timeout=60)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    assert results[1]["error"] == "not_image"
    request_id = response.json()["request_id"]
    assert [results[0]["request_id"], results[2]["request_id"]] == [f"{request_id}/0", f"{request_id}/2"]
    singles = [
        requests.post(f"{base_url}/predict", files={"file": ("x.png", d)}, timeout=60).json() for d in (clean, dusty)
    ]
    for got, want in zip([results[0], results[2]], singles, strict=True):
        # batched and single forward passes may differ in the last float bits
        assert {k: v for k, v in got.items() if k not in ("confidence", "probabilities", "request_id")} == {
            k: v for k, v in want.items() if k not in ("confidence", "probabilities", "request_id")
        }
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"data": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"json": {"image": "not base64 at all!"}}, 400, "invalid_base64"),
        ({"json": {"picture": "aGVsbG8="}}, 400, "missing_field"),
        ({"data": b"{oops", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"files": {"other": ("x.png", b"x")}}, 400, "missing_field"),
        ({"files": {"file": ("x.txt", b"plain text, no pixels")}}, 415, "not_image"),
        ({"files": {"file": ("x.png", encode(Image.new("RGB", (8, 8))))}}, 422, "too_small"),
        ({"files": {"file": ("x.png", png_header_only(30_000, 30_000))}}, 413, "too_large"),
        ({"files": {"file": ("x.bin", b"\0" * (MAX_REQUEST_BYTES + 1))}}, 413, "request_too_large"),
    ],
)
def test_bad_input_gets_a_4xx_json_reason(base_url: str, kwargs: dict, status: int, reason: str) -> None:
    response = requests.post(f"{base_url}/predict", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert response.json()["detail"]


def test_truncated_and_corrupt_images_are_rejected_and_service_keeps_serving(base_url: str, training_dir: Path) -> None:
    good = _examples(training_dir, "clean", 1)[0]
    truncated = requests.post(f"{base_url}/predict", files={"file": ("t.png", good[: len(good) // 2])}, timeout=60)
    assert (truncated.status_code, truncated.json()["error"]) == (422, "truncated")
    corrupt = requests.post(f"{base_url}/predict", files={"file": ("c.png", good[:64] + bytes(2000))}, timeout=60)
    assert (corrupt.status_code, corrupt.json()["error"]) == (422, "unreadable")
    assert requests.get(f"{base_url}/health", timeout=30).status_code == 200
    assert requests.post(f"{base_url}/predict", files={"file": ("g.png", good)}, timeout=60).status_code == 200


def test_classes_model_docs_and_upload_page(
    base_url: str, first_version: str, classification_run: TrainOutcome
) -> None:
    assert requests.get(f"{base_url}/classes", timeout=30).json() == {
        "task": "classification",
        "classes": ["clean", "dusty"],
    }
    model = requests.get(f"{base_url}/model", timeout=30).json()
    assert model["version"] == first_version
    assert model["run_id"] == classification_run.run_id
    assert model["dataset_version"] == classification_run.dataset_version
    assert model["metrics"] == pytest.approx(classification_run.test_metrics)
    paths = requests.get(f"{base_url}/openapi.json", timeout=30).json()["paths"]
    assert {"/predict", "/predict_batch", "/health", "/classes", "/model", "/reload-model"} <= set(paths)
    page = requests.get(f"{base_url}/", timeout=30)
    assert page.status_code == 200 and '<input id="file" type="file"' in page.text


def test_reload_needs_the_bearer_token(base_url: str) -> None:
    assert requests.post(f"{base_url}/reload-model", timeout=30).status_code == 401
    wrong = requests.post(f"{base_url}/reload-model", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401


def _reload(base_url: str) -> requests.Response:
    return requests.post(f"{base_url}/reload-model", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)


def test_hot_swap_under_load_fails_no_request(
    base_url: str, first_version: str, mlflow_uri: str, training_dir: Path
) -> None:
    trained = registry.find(mlflow_uri, NAME, first_version)
    second = registry.register(mlflow_uri, NAME, trained.run_id, trained.source, {}).version
    data = _examples(training_dir, "dusty", 1)[0]
    try:
        with RequestLoop(base_url, data) as loop:
            time.sleep(2)
            registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, second)
            there = _reload(base_url)
            time.sleep(2)
            registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, first_version)
            back = _reload(base_url)
            time.sleep(2)
    finally:
        registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, first_version)
    assert there.json() == {"old_version": first_version, "new_version": second, "alias": "champion"}
    assert back.json() == {"old_version": second, "new_version": first_version, "alias": "champion"}
    assert loop.failures == []
    versions = loop.versions()
    assert versions[0] == first_version and second in versions and versions[-1] == first_version
    assert requests.get(f"{base_url}/health", timeout=30).json()["version"] == first_version


def _register_unloadable(mlflow_uri: str, first_version: str, tmp_path: Path) -> str:
    """A version of NAME whose spec is fine but whose weights file is not safetensors."""
    good = registry.find(mlflow_uri, NAME, first_version)
    folder = tmp_path / "broken"
    folder.mkdir()
    runs.download(mlflow_uri, f"{good.source}/{artifact.SPEC}", folder)
    (folder / artifact.WEIGHTS).write_bytes(b"these bytes are not a safetensors file")
    run_id = runs.create_run(mlflow_uri, "test-broken-weights", "broken-weights", {})
    source = runs.log_directory(mlflow_uri, run_id, folder, "model")
    return registry.register(mlflow_uri, NAME, run_id, source, {}).version


def _refresh_failures(reason: str) -> float:
    return metric_total("ray_lensops_model_refresh_failures_total", reason=reason)


def test_a_version_that_cannot_load_degrades_health_and_the_old_one_keeps_answering(
    base_url: str, first_version: str, mlflow_uri: str, training_dir: Path, tmp_path: Path
) -> None:
    broken = _register_unloadable(mlflow_uri, first_version, tmp_path)
    data = _examples(training_dir, "clean", 1)[0]
    try:
        registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, broken)
        reload = _reload(base_url)
        assert reload.status_code == 502
        assert reload.json()["error"] == "model_load_failed" and f"version {broken}" in reload.json()["detail"]
        health = requests.get(f"{base_url}/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and health.json()["version"] == first_version
        assert health.json()["reason"].startswith("model_load_failed: ")
        answer = requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == first_version
        wait_until(lambda: _refresh_failures("model_load_failed") >= 1, 60, "the refresh failure on /metrics")
    finally:
        registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, first_version)
    assert _reload(base_url).json()["new_version"] == first_version
    assert requests.get(f"{base_url}/health", timeout=30).json() == {"status": "ok", "version": first_version}


def test_reload_answers_404_json_when_the_alias_is_gone(base_url: str, first_version: str, mlflow_uri: str) -> None:
    client = runs.client(mlflow_uri)
    client.delete_registered_model_alias(NAME, registry.CHAMPION)
    try:
        reload = _reload(base_url)
    finally:
        registry.set_alias(mlflow_uri, NAME, registry.CHAMPION, first_version)
    assert reload.status_code == 404 and reload.json()["error"] == "no_such_version"
    assert requests.get(f"{base_url}/health", timeout=30).json()["status"] == "degraded"
    assert _reload(base_url).status_code == 200


def test_the_local_service_listens_on_loopback_only(base_url: str) -> None:
    state = Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent  # the suite's Ray (serve_env)
    haproxies = processes_named("haproxy", with_argument=str(state))  # an old one may still be draining
    addresses = set().union(*(listening(pid) for pid in haproxies))
    port = int(base_url.rsplit(":", 1)[1])
    assert ("127.0.0.1", port) in addresses
    assert len({p for _, p in addresses}) == 3  # the service, HAProxy's stats and its Prometheus page
    assert {host for host, _ in addresses} == {"127.0.0.1"}


def test_serve_config_is_valid_for_serve_deploy() -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "serve_app:build_app"
    assert {d.name for d in app.deployments} == {"Ingress", "Preprocessor", "Model"}
    for deployment in config["applications"][0]["deployments"]:  # as the code's defaults, two or more
        assert deployment["ray_actor_options"]["num_cpus"] == CPUS[deployment["name"]]
        assert deployment["autoscaling_config"]["min_replicas"] >= 2
    import serve_app

    assert isinstance(serve_app.build_app(app.args), serve.Application)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def test_upload_page_answers_three_images_at_once_and_shows_why_in_a_real_browser(
    base_url: str, training_dir: Path, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base_url}/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "meta").text.startswith(f"model {NAME} v"))
    images = [*sorted((training_dir / "dusty").glob("*.png"))[:2], sorted((training_dir / "clean").glob("*.png"))[0]]
    browser.find_element(By.ID, "file").send_keys("\n".join(map(str, images)))

    cards = wait.until(lambda d: _answered_cards(d, len(images)))
    assert [c.find_element(By.CLASS_NAME, "file").text for c in cards] == [path.name for path in images]
    assert [c.find_element(By.CLASS_NAME, "label").text for c in cards] == ["dusty", "dusty", "clean"]
    assert all(c.find_element(By.CLASS_NAME, "confidence").text.startswith("confidence ") for c in cards)
    bars = cards[0].find_elements(By.CSS_SELECTOR, ".bars .row")
    assert [b.find_element(By.CLASS_NAME, "name").text for b in bars] == ["clean", "dusty"]
    why, picture = cards[0].find_element(By.TAG_NAME, "button"), cards[0].find_element(By.TAG_NAME, "img")
    shown_before = picture.get_attribute("src")
    why.send_keys(Keys.SPACE)  # from the keyboard: the toggle is a real button
    wait.until(lambda d: why.get_attribute("aria-pressed") == "true")
    assert picture.get_attribute("src").startswith("data:image/png;base64,")
    assert picture.get_attribute("alt").endswith("where the model looked for dusty")
    why.click()
    wait.until(lambda d: why.get_attribute("aria-pressed") == "false")
    assert picture.get_attribute("src") == shown_before
    assert browser.find_element(By.ID, "error").text == ""
    browser.save_screenshot(str(tmp_path / "upload-page.png"))


def _answered_cards(browser: Any, count: int) -> list[Any] | None:
    """The page's result cards once all ``count`` have their answer (and with it a "why?" button)."""
    from selenium.webdriver.common.by import By

    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    answered = len(cards) == count and all(card.find_elements(By.TAG_NAME, "button") for card in cards)
    return cards if answered else None


def test_the_docs_page_uploads_an_image_and_shows_the_answer_in_a_real_browser(
    base_url: str, training_dir: Path, browser: Any, tmp_path: Path
) -> None:
    """Swagger UI, served by the service itself (no CDN): Try it out -> choose a file -> Execute."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"{base_url}/docs")
    wait = WebDriverWait(browser, 60)
    operation = wait.until(lambda d: d.find_element(By.ID, "operations-default-predict_predict_post"))
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda d: operation.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    content_type = wait.until(lambda d: operation.find_element(By.CSS_SELECTOR, ".opblock-section-request-body select"))
    Select(content_type).select_by_visible_text("multipart/form-data")
    image = sorted((training_dir / "clean").glob("*.png"))[0]
    wait.until(lambda d: operation.find_element(By.CSS_SELECTOR, "input[type=file]")).send_keys(str(image))
    operation.find_element(By.CSS_SELECTOR, ".execute").click()
    answer = ".live-responses-table tbody .response"
    status = wait.until(lambda d: operation.find_element(By.CSS_SELECTOR, f"{answer} .response-col_status"))
    body = operation.find_element(By.CSS_SELECTOR, f"{answer} .response-col_description pre").text
    browser.save_screenshot(str(tmp_path / "docs-page.png"))
    assert status.text.strip() == "200", body
    assert json.loads(body)["model"]["name"] == NAME


def test_answers_match_offline_inference_of_the_same_model(
    base_url: str, training_dir: Path, mlflow_uri: str, first_version: str
) -> None:
    offline = load_predictor(mlflow_uri, NAME, first_version)
    images = _examples(training_dir, "clean", 2) + _examples(training_dir, "dusty", 2)
    expected = offline.predict({"image": np.stack([to_uint8(data, offline.spec.preprocess) for data in images])})
    files = [("files", (f"{i}.png", data)) for i, data in enumerate(images)]
    batch = requests.post(f"{base_url}/predict_batch", files=files, timeout=60).json()["results"]
    single = [requests.post(f"{base_url}/predict", files={"file": ("x.png", d)}, timeout=60).json() for d in images]
    b64 = [
        requests.post(f"{base_url}/predict", json={"image": base64.b64encode(d).decode()}, timeout=60).json()
        for d in images
    ]
    for answers in (batch, single, b64):
        for got, want in zip(answers, expected, strict=True):
            assert got["prediction"] == want["prediction"]
            for label, probability in want["probabilities"].items():
                assert got["probabilities"][label] == pytest.approx(probability, abs=1e-4)


def test_a_batch_job_answers_as_the_service_does(
    base_url: str, training_dir: Path, classification_cfg: LensopsConfig, tmp_path: Path
) -> None:
    images = sorted(training_dir.glob("*/*.png"))[::40]
    files = [("files", (path.name, path.read_bytes())) for path in images]
    answers = requests.post(f"{base_url}/predict_batch", files=files, timeout=60).json()["results"]
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = NAME
    cfg.tracking.experiment = "test-batch"  # test_training counts the runs of the shared fit's experiment
    cfg.batch.model = answers[0]["model"]["version"]  # the version serving now (other tests swap it)
    (manifest := tmp_path / "files.txt").write_text("\n".join(map(str, images)))

    outcome = batch_predict(cfg, str(manifest), str(tmp_path / "out"))

    records = {row["path"]: row for row in parts.read(outcome.output).to_pylist()}
    assert len(records) == len(images) == 10
    for path, answer in zip(images, answers, strict=True):
        row = records[str(path)]
        assert (row["prediction"], row["model_version"]) == (answer["prediction"], answer["model"]["version"])
        for label, probability in dict(row["probabilities"]).items():
            assert answer["probabilities"][label] == pytest.approx(probability, abs=1e-4)


def test_explain_shows_where_the_model_looked_for_the_predicted_or_an_asked_class(
    base_url: str, training_dir: Path
) -> None:
    data = _examples(training_dir, "dusty", 1)[0]
    predicted = requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, timeout=60).json()

    answer = requests.post(f"{base_url}/explain", files={"file": ("x.png", data)}, timeout=60).json()

    assert answer["prediction"] == predicted["prediction"] and answer["request_id"]
    for label, probability in predicted["probabilities"].items():
        assert answer["probabilities"][label] == pytest.approx(probability, abs=1e-5)
    explanation = answer["explanation"]
    assert explanation["target"] == predicted["prediction"]
    cam = np.array(explanation["cam"])
    assert cam.shape == (2, 2) and cam.min() == 0 and cam.max() == 1  # resnet18's layer4 at 64 px
    with Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"]))) as overlay:
        assert (overlay.format, overlay.size) == ("PNG", (64, 64))
    other = "clean" if predicted["prediction"] == "dusty" else "dusty"
    image = {"image": base64.b64encode(data).decode()}
    asked = requests.post(f"{base_url}/explain", params={"target": other}, json=image, timeout=60).json()
    assert asked["explanation"]["target"] == other and asked["prediction"] == predicted["prediction"]
    refused = requests.post(f"{base_url}/explain", params={"target": "rust"}, json=image, timeout=60)
    assert refused.status_code == 422
    assert refused.json() == {"error": "unknown_label", "detail": "unknown target 'rust': explain one of clean, dusty"}
    assert requests.post(f"{base_url}/predict", json=image, timeout=60).status_code == 200


def test_the_champion_as_an_mlflow_pyfunc_answers_as_the_service(
    base_url: str, training_dir: Path, mlflow_uri: str
) -> None:
    images = _examples(training_dir, "clean", 3) + _examples(training_dir, "dusty", 3)
    files = [("files", ("x.png", data)) for data in images]
    answers = requests.post(f"{base_url}/predict_batch", files=files, timeout=60).json()["results"]
    uri = f"models:/{NAME}/{answers[0]['model']['version']}"  # the version serving now (other tests swap it)

    with _tracking(mlflow_uri):
        frame = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": images}))
        local = Path(mlflow.artifacts.download_artifacts(uri))

    assert list(frame["prediction"]) == [answer["prediction"] for answer in answers]
    for row, answer in zip(frame.to_dict("records"), answers, strict=True):
        for label, probability in answer["probabilities"].items():
            assert row[f"probability:{label}"] == pytest.approx(probability, abs=1e-4)
    files_in_model = [path for path in local.rglob("*") if path.is_file()]
    assert not [path for path in files_in_model if path.suffix in {".pkl", ".pickle", ".pt", ".pth", ".joblib"}]
    assert "python_model" not in yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert len([path for path in files_in_model if path.suffix == ".safetensors" and "model" in path.name]) == 1


def test_mlflow_models_serve_answers_with_the_registered_version(
    base_url: str, training_dir: Path, mlflow_uri: str, tmp_path: Path
) -> None:
    data = _examples(training_dir, "dusty", 1)[0]
    answer = requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, timeout=60).json()
    port = free_port()
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "--env-manager", "local", "--port", str(port)]
    model = ["-m", f"models:/{NAME}/{answer['model']['version']}"]
    env = user_env(tmp_path, MLFLOW_TRACKING_URI=mlflow_uri)
    with subprocess.Popen([*command, *model], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as server:
        try:
            wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ping"), 120, "mlflow models serve")
            body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(data).decode()]]}}
            response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        finally:
            server.terminate()
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert row["prediction"] == answer["prediction"]
    assert row["confidence"] == pytest.approx(answer["confidence"], abs=1e-4)


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` for a ``models:/`` URI, then restored."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def test_health_is_503_until_a_champion_exists_then_200(
    base_url: str, classification_cfg: LensopsConfig, classification_run: TrainOutcome, mlflow_uri: str
) -> None:
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = "test-pending"
    cfg.serve.watch_interval_s = 1
    cfg.serve.max_replicas = 1
    serve.run(build(cfg), name="pending", route_prefix="/pending")
    before = requests.get(f"{base_url}/pending/health", timeout=30)
    assert before.status_code == 503
    assert "test-pending" in before.json()["reason"]
    assert requests.post(f"{base_url}/pending/predict", json={"image": "aGk="}, timeout=30).status_code == 503
    trained = registry.find(mlflow_uri, classification_run.model_name, classification_run.version)
    version = registry.register(mlflow_uri, "test-pending", trained.run_id, trained.source, {}).version
    registry.set_alias(mlflow_uri, "test-pending", registry.CHAMPION, version)
    wait_until(lambda: http_ok(f"{base_url}/pending/health"), 60, "the pending app to load its first champion")
    after = requests.get(f"{base_url}/pending/health", timeout=30)
    assert after.json() == {"status": "ok", "version": version}
    serve.delete("pending")


def test_cli_predict_prints_one_answer_per_image(base_url: str, training_dir: Path) -> None:
    images = [sorted((training_dir / label).glob("*.png"))[0] for label in ("clean", "dusty")]
    done = subprocess.run(
        [sys.executable, "-m", "lensops.cli", "predict", *map(str, images), "--url", base_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=user_env(),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(p) for p in images]
    assert all(f"model {NAME} v" in line for line in lines)


# ---- challenger traffic: an app of its own, whose champion and challenger hold the same weights ----


@pytest.fixture(scope="module")
def two_versions(classification_run: TrainOutcome, mlflow_uri: str) -> tuple[str, str]:
    """(champion, challenger) of ``CHALLENGER_NAME``: the trained weights registered twice."""
    trained = registry.find(mlflow_uri, classification_run.model_name, classification_run.version)
    champion, challenger = (
        registry.register(mlflow_uri, CHALLENGER_NAME, trained.run_id, trained.source, {}).version for _ in range(2)
    )
    registry.set_alias(mlflow_uri, CHALLENGER_NAME, registry.CHAMPION, champion)
    registry.set_alias(mlflow_uri, CHALLENGER_NAME, registry.CHALLENGER, challenger)
    return champion, challenger


@pytest.fixture
def deploy_challenger(
    base_url: str, classification_cfg: LensopsConfig, two_versions: tuple[str, str]
) -> Iterator[Callable[..., str]]:
    """(Re)deploy the app ``challenger`` at ``/challenger`` in a challenger mode; gives its URL once
    healthy. Deleted after each test: the session's Ray has room for two applications at once."""

    def deploy(mode: str, canary_percent: float = 10) -> str:
        cfg = classification_cfg.model_copy(deep=True)
        cfg.tracking.registered_model = CHALLENGER_NAME
        cfg.serve.watch_interval_s = 0
        cfg.serve.max_replicas = 1
        cfg.serve.challenger_mode = mode
        cfg.serve.canary_percent = canary_percent
        serve.run(build(cfg, {"LENSOPS_RELOAD_TOKEN": TOKEN}), name="challenger", route_prefix="/challenger")
        url = f"{base_url}/challenger"
        wait_until(lambda: http_ok(f"{url}/health"), 120, f"a healthy {mode} app")
        return url

    yield deploy
    serve.delete("challenger")


def _predict_all(url: str, images: list[bytes]) -> list[requests.Response]:
    def post(data: bytes) -> requests.Response:
        return requests.post(f"{url}/predict", files={"file": ("x.png", data)}, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(post, images))


def _answered_by(responses: list[requests.Response]) -> list[tuple[str, str]]:
    assert [r.text for r in responses if r.status_code != 200] == []
    return [(r.json()["model"]["version"], r.json()["model"]["alias"]) for r in responses]


def test_shadow_answers_with_the_champion_and_counts_the_challenger(
    deploy_challenger: Callable[..., str], two_versions: tuple[str, str], training_dir: Path
) -> None:
    champion, challenger = two_versions
    url = deploy_challenger("shadow")
    images = (_examples(training_dir, "clean", 5) + _examples(training_dir, "dusty", 5)) * 5
    assert set(_answered_by(_predict_all(url, images))) == {(champion, "champion")}

    def shadow_block() -> dict | None:  # shadow predictions finish in the background
        block = requests.get(f"{url}/model", timeout=30).json()["challenger"]
        return block if block["shadow_answers"] >= len(images) else None

    block = wait_until(shadow_block, 30, "every shadow prediction to be counted")
    assert block == {
        "version": challenger,
        "alias": "challenger",
        "mode": "shadow",
        "canary_percent": 10,
        "shadow_answers": len(images),
        "shadow_agreement": 1.0,
        "shadow_errors": 0,
    }


def test_canary_sends_its_share_to_the_challenger_and_none_once_it_is_gone_or_the_champion(
    deploy_challenger: Callable[..., str], two_versions: tuple[str, str], training_dir: Path, mlflow_uri: str
) -> None:
    champion, challenger = two_versions
    url = deploy_challenger("canary", canary_percent=30)
    model = requests.get(f"{url}/model", timeout=30).json()
    assert (model["version"], model["alias"]) == (champion, "champion")
    assert model["challenger"] == {"version": challenger, "alias": "challenger", "mode": "canary", "canary_percent": 30}
    answered = _answered_by(_predict_all(url, _examples(training_dir, "dusty", 1) * 300))
    assert set(answered) == {(champion, "champion"), (challenger, "challenger")}
    assert answered.count((challenger, "challenger")) / len(answered) == pytest.approx(0.3, abs=0.1)
    files = [("files", (f"{i}.png", data)) for i, data in enumerate(_examples(training_dir, "clean", 40))]
    batch = requests.post(f"{url}/predict_batch", files=files, timeout=120).json()["results"]
    # each item is drawn on its own: 40 items all from one version has odds below 1e-5
    assert {(r["model"]["version"], r["model"]["alias"]) for r in batch} == set(answered)

    # the challenger alias moved onto the champion's version, then deleted: no canary either way
    data = _examples(training_dir, "clean", 1) * 4
    reload = {"url": f"{url}/reload-model", "headers": {"Authorization": f"Bearer {TOKEN}"}, "timeout": 120}
    registry.set_alias(mlflow_uri, CHALLENGER_NAME, registry.CHALLENGER, champion)
    assert requests.post(**reload).status_code == 200
    assert requests.get(f"{url}/model", timeout=30).json()["challenger"] is None
    assert set(_answered_by(_predict_all(url, data))) == {(champion, "champion")}
    runs.client(mlflow_uri).delete_registered_model_alias(CHALLENGER_NAME, registry.CHALLENGER)
    assert requests.post(**reload).json() == {"old_version": champion, "new_version": champion, "alias": "champion"}
    assert requests.get(f"{url}/model", timeout=30).json()["challenger"] is None
    assert set(_answered_by(_predict_all(url, data))) == {(champion, "champion")}
    assert requests.get(f"{url}/health", timeout=30).json() == {"status": "ok", "version": champion}


# ---- the typed contract, fuzzed; access and load shedding ------------------------------------


def test_the_service_holds_to_its_openapi_schema_under_fuzzing(base_url: str, tmp_path: Path) -> None:
    """Every schemathesis check, a fixed seed, derandomised, a bounded number of examples."""
    command = [
        *(str(VENV_BIN / "st"), "--config-file", str(TESTS / "schemathesis.toml"), "--no-color"),
        *("run", f"{base_url}/openapi.json", "--checks", "all", "--workers", "1"),
        *("--seed", "7", "--generation-deterministic", "--max-examples", "12"),
        *("-H", f"Authorization: Bearer {TOKEN}"),  # the reload route's token, as the schema declares
    ]
    done = subprocess.run(command, cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    # Its one warning is expected: most generated uploads are no image, and get their 415 or 422.
    cases = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed", done.stdout)
    assert cases and cases[1] == cases[2] and int(cases[1]) >= 60, done.stdout[-6000:]


KEYS = [f"key-{i}" for i in range(16)]
ORIGIN = "https://inspection.example"


@pytest.fixture(scope="module")
def guarded_url(base_url: str, classification_cfg: LensopsConfig, first_version: str) -> Iterator[str]:
    """The same model behind API keys, a rate limit, CORS for one origin and room for one request."""
    cfg = classification_cfg.model_copy(deep=True)
    cfg.tracking.registered_model = NAME
    cfg.serve.watch_interval_s = 0
    cfg.serve.max_replicas = 1
    cfg.serve.cors_origins = [ORIGIN]
    cfg.serve.rate_limit_per_s = 0.5
    cfg.serve.rate_limit_burst = 3
    cfg.serve.ingress_max_inflight = 1
    serve.run(build(cfg, {"LENSOPS_API_KEYS": ",".join(KEYS)}), name="guarded", route_prefix="/guarded")
    url = f"{base_url}/guarded"
    wait_until(lambda: http_ok(f"{url}/health"), 120, "a healthy guarded app")
    yield url
    serve.delete("guarded")


def _post(url: str, data: bytes, **headers: str) -> requests.Response:
    return requests.post(f"{url}/predict", files={"file": ("x.png", data)}, headers=headers, timeout=60)


def test_with_api_keys_set_a_prediction_needs_one_of_them(guarded_url: str, training_dir: Path) -> None:
    data = _examples(training_dir, "clean", 1)[0]
    for headers in ({}, {"X-API-Key": "not-a-key"}, {"Authorization": "Bearer not-a-key"}):
        refused = _post(guarded_url, data, **headers)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", refused.text
    assert _post(guarded_url, data, **{"X-API-Key": KEYS[0]}).status_code == 200
    assert _post(guarded_url, data, Authorization=f"Bearer {KEYS[1]}").status_code == 200
    assert requests.get(f"{guarded_url}/health", timeout=30).status_code == 200  # health needs no key
    feedback = requests.post(f"{guarded_url}/feedback", json={"request_id": "any", "label": "clean"}, timeout=30)
    assert feedback.status_code == 401 and feedback.json()["error"] == "unauthorized"


def test_cors_headers_follow_the_configured_origins(guarded_url: str, base_url: str) -> None:
    preflight = requests.options(
        f"{guarded_url}/predict",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = requests.get(f"{guarded_url}/health", headers={"Origin": ORIGIN}, timeout=30)
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = requests.get(f"{guarded_url}/health", headers={"Origin": "https://elsewhere.example"}, timeout=30)
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in requests.get(f"{base_url}/health", timeout=30).headers


def test_past_its_rate_a_client_gets_429_with_retry_after_and_other_clients_do_not(
    guarded_url: str, training_dir: Path
) -> None:
    data = _examples(training_dir, "dusty", 1)[0]
    answers = [_post(guarded_url, data, **{"X-API-Key": KEYS[2]}) for _ in range(5)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]  # the burst
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert all(a.json()["error"] == "rate_limited" and int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert _post(guarded_url, data, **{"X-API-Key": KEYS[3]}).status_code == 200


def test_past_its_queue_bound_the_service_answers_503_with_retry_after_at_once(
    guarded_url: str, training_dir: Path
) -> None:
    data = _examples(training_dir, "clean", 1)[0]

    def timed(key: str) -> tuple[requests.Response, float]:
        started = time.perf_counter()
        return _post(guarded_url, data, **{"X-API-Key": key}), time.perf_counter() - started

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(timed, KEYS[4:16]))
    shed = [(r, s) for r, s in results if r.status_code == 503]
    assert shed and all(r.status_code in (200, 503) for r, _ in results), [r.status_code for r, _ in results]
    assert all(r.json()["error"] == "overloaded" and r.headers["Retry-After"] == "1" for r, _ in shed)
    # at once: a shed request waits for no model, far less than the second it is told to wait
    assert max(s for _, s in shed) < 1.0
