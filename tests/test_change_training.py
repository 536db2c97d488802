"""Change detection through the one training path, on a real local Ray and a real MLflow store:
pair tiles with planted bad ones -> catalog -> Ray Train (1 epoch) -> test report -> registry ->
the champion served on Ray Serve, answering pairs over HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from browser import chromium
from change_setup import brief_config, serve_champion

from lensops.config import LensopsConfig
from lensops.data import samples
from lensops.data.catalog import Catalog, build_catalog
from lensops.model import masks
from lensops.model.tasks import get_task
from lensops.tracking import registry, runs
from lensops.training.fit import TrainOutcome, fit

pytestmark = pytest.mark.slow

TILE = 32
SCENES = 12


@pytest.fixture(scope="module")
def change_cfg(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> LensopsConfig:
    data = tmp_path_factory.mktemp("change-data")
    samples.write_change(data, scenes=SCENES, tile=TILE, seed=0)
    samples.add_bad_pairs(data)
    work = tmp_path_factory.mktemp("change-work")
    return brief_config(
        "change.yaml", data / samples.MANIFEST, work, mlflow_uri, "test-change", f"preprocess.image_size={TILE}"
    )


@pytest.fixture(scope="module")
def change_catalog(ray_cluster: None, change_cfg: LensopsConfig) -> Catalog:
    return build_catalog(change_cfg.data, get_task(change_cfg.model.task))


@pytest.fixture(scope="module")
def change_run(change_cfg: LensopsConfig, change_catalog: Catalog) -> TrainOutcome:
    return fit(change_cfg, change_catalog)


def test_bad_pairs_are_skipped_with_their_reasons_and_the_rest_kept(change_catalog: Catalog) -> None:
    reasons = {Path(s.path).parent.name: (s.reason.value, s.detail) for s in change_catalog.report.skipped}

    assert change_catalog.report.kept_files == SCENES * 16
    assert reasons["size-mismatch"] == (
        "mismatched",
        f"sizes differ: before {TILE}x{TILE}, after {TILE + 8}x{TILE}, mask {TILE}x{TILE}",
    )
    assert reasons["grey-mask"] == ("bad_mask", "mask is not binary: values 128")
    assert reasons["no-after"][0] == "unreadable" and reasons["no-after"][1].startswith("after: cannot read")


def test_no_scene_straddles_two_splits(change_catalog: Catalog) -> None:
    table = change_catalog.table

    assert table.groupby("group")["split"].nunique().max() == 1
    assert set(table["split"]) == {"train", "val", "test"}


def test_the_run_reports_change_metrics_and_draws_the_test_tiles(change_run: TrainOutcome, mlflow_uri: str) -> None:
    client = runs.client(mlflow_uri)
    run = client.get_run(change_run.run_id)
    artifacts = {a.path for a in client.list_artifacts(change_run.run_id, "evaluation")}

    assert {"train_iou", "val_iou", "val_f1", "test_iou", "test_f1", "test_precision", "test_recall"} <= set(
        run.data.metrics
    )
    assert 0 <= change_run.test_metrics["test_iou"] <= 1
    assert {"evaluation/examples.png", "evaluation/per_tile_iou.json", "evaluation/test_report.txt"} <= artifacts


def test_the_registered_version_answers_a_pair_with_a_mask_of_the_tile_size(
    change_run: TrainOutcome, mlflow_uri: str
) -> None:
    predictor = registry.load_predictor(mlflow_uri, change_run.model_name, change_run.version)
    rng = np.random.default_rng(0)
    before = rng.integers(0, 255, (2, 3, TILE, TILE), dtype=np.uint8)

    answers = predictor.predict({"before": before, "after": before[::-1].copy()})

    assert [masks.from_png(a["mask"]).shape for a in answers] == [(TILE, TILE)] * 2
    assert all(a["prediction"] in ("changed", "unchanged") and 0 <= a["changed_fraction"] <= 1 for a in answers)


@pytest.fixture(scope="module")
def change_service(change_cfg: LensopsConfig, change_run: TrainOutcome, mlflow_uri: str) -> Iterator[str]:
    yield from serve_champion(change_cfg, change_run, mlflow_uri)


def _tile(change_cfg: LensopsConfig, folder: str) -> dict[str, bytes]:
    root = Path(change_cfg.data.source).parent / folder
    return {path.stem: path.read_bytes() for path in root.glob("*.png")}


def _most_changed_tile(change_cfg: LensopsConfig) -> dict[str, bytes]:
    masks_by_tile = sorted(Path(change_cfg.data.source).parent.glob("scene*/*/mask.png"))
    changed = max(masks_by_tile, key=lambda path: masks.from_png(base64.b64encode(path.read_bytes())).sum())
    return _tile(change_cfg, str(changed.parent.relative_to(Path(change_cfg.data.source).parent)))


def test_the_service_answers_a_pair_sent_as_files_or_as_json_with_its_mask_and_regions(
    change_service: str, change_cfg: LensopsConfig, change_run: TrainOutcome
) -> None:
    tile = _most_changed_tile(change_cfg)
    files = {name: (f"{name}.png", tile[name]) for name in ("before", "after")}
    as_files = requests.post(f"{change_service}/predict", files=files, timeout=60)
    as_json = requests.post(
        f"{change_service}/predict", json={name: base64.b64encode(tile[name]).decode() for name in files}, timeout=60
    )

    assert as_files.status_code == 200, as_files.text
    answer = as_files.json()
    mask = masks.from_png(answer["mask"])
    assert mask.shape == (TILE, TILE)
    assert answer["changed_fraction"] == pytest.approx(mask.mean())
    assert sum(region["area"] for region in answer["regions"]) == mask.sum()
    assert answer["prediction"] == ("changed" if mask.any() else "unchanged")
    assert answer["model"]["version"] == change_run.version and answer["model"]["alias"] == "champion"
    assert {k: v for k, v in as_json.json().items() if k != "request_id"} == {
        k: v for k, v in answer.items() if k != "request_id"
    }
    assert requests.get(f"{change_service}/model", timeout=30).json()["inputs"] == ["before", "after"]


def test_bad_pairs_get_a_4xx_saying_what_was_wrong_and_the_service_keeps_answering(
    change_service: str, change_cfg: LensopsConfig
) -> None:
    def sent(tile: dict[str, bytes], path: str = "/predict") -> tuple[int, str | None]:
        files = {name: (f"{name}.png", data) for name, data in tile.items() if name != "mask"}
        response = requests.post(f"{change_service}{path}", files=files, timeout=60)
        return response.status_code, response.json().get("error")

    good = _most_changed_tile(change_cfg)

    assert sent(_tile(change_cfg, "planted/size-mismatch")) == (422, "mismatched_inputs")
    assert sent(_tile(change_cfg, "planted/no-after")) == (400, "missing_field")
    assert sent({"before": good["before"], "after": b"not an image"}) == (415, "not_image")
    assert sent({"files": good["before"]}, "/predict_batch") == (400, "unsupported_for_model")
    assert sent({"file": good["before"]}, "/explain") == (400, "unsupported_for_model")
    assert sent(good) == (200, None)
    assert requests.get(f"{change_service}/health", timeout=30).json()["status"] == "ok"


RED_OVER = """
const canvas = document.querySelector('#results canvas');
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let red = 0;
for (let i = 0; i < pixels.length; i += 4) if (pixels[i] - pixels[i + 1] > 80) red++;
return [canvas.width, canvas.height, red];
"""
"""The page's canvas: its size and how many of its pixels are under the red of the mask (no
land cover of the generated scenes is 80 levels redder than green)."""


def test_the_upload_page_takes_the_two_images_and_draws_the_mask_over_the_after_image(
    change_service: str, change_cfg: LensopsConfig, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tile = _most_changed_tile(change_cfg)
    files = {name: (f"{name}.png", tile[name]) for name in ("before", "after")}
    answer = requests.post(f"{change_service}/predict", files=files, timeout=60).json()
    paths = {name: tmp_path / f"{name}.png" for name in files}
    for name, path in paths.items():
        path.write_bytes(tile[name])

    with chromium(tmp_path / "profile") as browser:
        browser.get(f"{change_service}/")
        wait = WebDriverWait(browser, 60)
        form = wait.until(lambda d: d.find_element(By.ID, "pair") if d.find_elements(By.NAME, "after") else None)
        for name, path in paths.items():
            form.find_element(By.NAME, name).send_keys(str(path))
        form.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results canvas") or d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text == ""
        width, height, red = browser.execute_script(RED_OVER)
        label = browser.find_element(By.CSS_SELECTOR, "#results .label").text
        browser.save_screenshot(str(tmp_path / "pair-page.png"))

    changed = masks.from_png(answer["mask"]).sum()
    assert (width, height) == (TILE, TILE) and label == answer["prediction"]
    assert abs(red - changed) <= TILE, (red, changed)
