"""The Serve application over real HTTP on a real local Ray: answers, guards, hot swap."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import ray
import requests
import yaml
from factories import encode, png_header_only
from PIL import Image
from ray import serve
from ray.serve.schema import ServeDeploySchema
from traffic import RequestLoop

from lensops.config import LensopsConfig
from lensops.model import artifact
from lensops.model.preprocess import to_uint8
from lensops.runtime import free_port
from lensops.serving.app import build, run_local
from lensops.tracking import registry, runs
from lensops.tracking.registry import load_predictor
from lensops.training.fit import TrainOutcome
from lensops.waiting import http_ok, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
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
    correct = 0
    for label in ("clean", "dusty"):
        for data in _examples(training_dir, label, 4):
            response = requests.post(f"{base_url}/predict", files={"file": ("x.png", data, "image/png")}, timeout=60)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert set(answer) == {"prediction", "confidence", "probabilities", "model"}
            assert set(answer["probabilities"]) == {"clean", "dusty"}
            assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            assert answer["confidence"] == max(answer["probabilities"].values())
            assert answer["model"]["name"] == NAME
            assert answer["model"]["version"] == first_version
            assert answer["model"]["alias"] == "champion"
            correct += answer["prediction"] == label
    assert correct >= 7


def test_json_base64_gives_the_same_answer_as_multipart(base_url: str, training_dir: Path) -> None:
    data = _examples(training_dir, "dusty", 1)[0]
    multipart = requests.post(f"{base_url}/predict", files={"file": ("x.png", data)}, timeout=60).json()
    as_json = requests.post(f"{base_url}/predict", json={"image": base64.b64encode(data).decode()}, timeout=60).json()
    assert as_json == multipart


def test_batch_keeps_order_and_isolates_a_bad_item(base_url: str, training_dir: Path) -> None:
    clean, dusty = _examples(training_dir, "clean", 1)[0], _examples(training_dir, "dusty", 1)[0]
    files = [("files", ("a.png", clean)), ("files", ("b.png", b"not an image")), ("files", ("c.png", dusty))]
    response = requests.post(f"{base_url}/predict_batch", files=files, timeout=60)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 3
    assert results[1]["error"] == "not_image"
    singles = [
        requests.post(f"{base_url}/predict", files={"file": ("x.png", d)}, timeout=60).json() for d in (clean, dusty)
    ]
    for got, want in zip([results[0], results[2]], singles, strict=True):
        # batched and single forward passes may differ in the last float bits
        assert {k: v for k, v in got.items() if k not in ("confidence", "probabilities")} == {
            k: v for k, v in want.items() if k not in ("confidence", "probabilities")
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
    """``ray_lensops_model_refresh_failures_total`` for ``reason`` on this node's metrics page."""
    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    pattern = rf'^ray_lensops_model_refresh_failures_total{{[^}}]*reason="{reason}"[^}}]*}} ([0-9.e+]+)$'
    return sum(float(value) for value in re.findall(pattern, page, flags=re.M))


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


def test_serve_config_is_valid_for_serve_deploy() -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "serve_app:build_app"
    assert {d.name for d in app.deployments} == {"Ingress", "Preprocessor", "Model"}
    import serve_app

    assert isinstance(serve_app.build_app(app.args), serve.Application)


def test_upload_page_shows_label_confidence_and_bars_in_a_real_browser(
    base_url: str, training_dir: Path, first_version: str, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{base_url}/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "meta").text.startswith(f"model {NAME} v"))
        image = sorted((training_dir / "dusty").glob("*.png"))[0]
        driver.find_element(By.ID, "file").send_keys(str(image))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "label").text)
        assert driver.find_element(By.ID, "label").text == "dusty"
        assert driver.find_element(By.ID, "confidence").text.startswith("confidence ")
        bars = driver.find_elements(By.CSS_SELECTOR, "#bars .row")
        assert [b.find_element(By.CLASS_NAME, "name").text for b in bars] == ["clean", "dusty"]
        assert driver.find_element(By.ID, "error").text == ""
        driver.save_screenshot(str(tmp_path / "upload-page.png"))
    finally:
        driver.quit()


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


@pytest.fixture(scope="module")
def deploy_challenger(
    base_url: str, classification_cfg: LensopsConfig, two_versions: tuple[str, str]
) -> Iterator[Callable[..., str]]:
    """(Re)deploy the app ``challenger`` at ``/challenger`` in a challenger mode; gives its URL once healthy."""

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


def test_canary_sends_its_share_of_predictions_to_the_challenger(
    deploy_challenger: Callable[..., str], two_versions: tuple[str, str], training_dir: Path
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


def test_a_missing_challenger_or_the_champion_itself_gets_no_traffic(
    deploy_challenger: Callable[..., str], two_versions: tuple[str, str], training_dir: Path, mlflow_uri: str
) -> None:
    champion, challenger = two_versions
    url = deploy_challenger("canary", canary_percent=100)
    data = _examples(training_dir, "clean", 1) * 4
    assert set(_answered_by(_predict_all(url, data))) == {(challenger, "challenger")}
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
