"""Change detection from GeoTIFF rasters to a served GeoTIFF mask, on a real local Ray, a real
MLflow store and Ray Serve: generated 4-band scenes -> ``lensops chip`` into 64 px georeferenced
tiles -> catalog (one tile planted without its after image) -> Ray Train (1 epoch, band ranges
from the training split) -> registry -> ``POST /predict?format=geotiff`` with a GeoTIFF pair."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from change_setup import brief_config, serve_champion

from lensops.config import LensopsConfig
from lensops.data import samples
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.chipping import chip
from lensops.data.rasters import read_bytes, read_raster
from lensops.model import masks
from lensops.model.tasks import get_task
from lensops.tracking import registry
from lensops.training.fit import TrainOutcome, fit

pytestmark = pytest.mark.slow

TILE = 64
SCENES = 8
"""Scenes of 2 x 2 tiles: a few whole scenes per split."""


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rasters, out = tmp_path_factory.mktemp("scenes"), tmp_path_factory.mktemp("tiles")
    samples.write_change_rasters(rasters, SCENES, 2 * TILE, seed=0)
    for scene in sorted(path for path in rasters.iterdir() if path.is_dir()):
        chip(scene / "before.tif", scene / "after.tif", scene / "mask.tif", out, size=TILE, min_valid=0.5)
    (next(out.glob("*/*/after.tif"))).unlink()  # one tile without its after image
    return out


@pytest.fixture(scope="module")
def bands_cfg(tiles: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> LensopsConfig:
    work = tmp_path_factory.mktemp("work")
    return brief_config("change-bands.yaml", tiles, work, mlflow_uri, "test-change-bands")


@pytest.fixture(scope="module")
def bands_catalog(ray_cluster: None, bands_cfg: LensopsConfig) -> Catalog:
    return build_catalog(bands_cfg.data, get_task(bands_cfg.model.task))


@pytest.fixture(scope="module")
def bands_run(bands_cfg: LensopsConfig, bands_catalog: Catalog) -> TrainOutcome:
    return fit(bands_cfg, bands_catalog)


@pytest.fixture(scope="module")
def bands_service(bands_cfg: LensopsConfig, bands_run: TrainOutcome, mlflow_uri: str) -> Iterator[str]:
    yield from serve_champion(bands_cfg, bands_run, mlflow_uri)


def test_chipped_tiles_are_examples_whose_scenes_stay_in_one_split(bands_catalog: Catalog) -> None:
    table, skipped = bands_catalog.table, bands_catalog.report.skipped

    assert bands_catalog.report.kept_files == SCENES * 4 - 1
    assert [(s.reason.value, s.detail) for s in skipped] == [("missing_file", "no after file")]
    assert table.groupby("group")["split"].nunique().max() == 1
    assert set(table["split"]) == {"train", "val", "test"}


def test_the_version_keeps_the_training_splits_band_ranges(bands_run: TrainOutcome, mlflow_uri: str) -> None:
    spec = registry.load_predictor(mlflow_uri, bands_run.model_name, bands_run.version).spec

    assert spec.preprocess.bands == ("B4", "B3", "B2", "B8") and spec.model.in_channels == 4
    assert len(spec.preprocess.band_ranges) == 4 and all(low < high for low, high in spec.preprocess.band_ranges)
    assert len(spec.preprocess.mean) == 4 and 0 <= bands_run.test_metrics["test_iou"] <= 1


def test_a_geotiff_pair_gets_a_geotiff_mask_with_the_inputs_georeference(
    bands_service: str, bands_catalog: Catalog
) -> None:
    tile = Path(bands_catalog.split("test")["before"].iloc[0].removeprefix("file://")).parent
    files = {name: (f"{name}.tif", (tile / f"{name}.tif").read_bytes()) for name in ("before", "after")}

    tiff = requests.post(f"{bands_service}/predict", params={"format": "geotiff"}, files=files, timeout=60)
    answer = requests.post(f"{bands_service}/predict", files=files, timeout=60).json()

    assert tiff.status_code == 200 and tiff.headers["content-type"] == "image/tiff", tiff.text[:500]
    mask, after = read_bytes(tiff.content), read_raster(tile / "after.tif")
    assert mask.crs == after.crs and tuple(mask.transform) == tuple(after.transform)
    assert mask.shape == (TILE, TILE)
    assert ((mask.data[0] > 0) == masks.from_png(answer["mask"])).all()


def test_an_image_without_the_models_bands_or_georeference_gets_a_4xx(
    bands_service: str, bands_catalog: Catalog, tmp_path: Path
) -> None:
    from PIL import Image

    tile = Path(bands_catalog.split("test")["before"].iloc[0].removeprefix("file://")).parent
    Image.fromarray(np.zeros((TILE, TILE, 3), np.uint8)).save(tmp_path / "x.png")
    png = base64.b64encode((tmp_path / "x.png").read_bytes()).decode()
    before = base64.b64encode((tile / "before.tif").read_bytes()).decode()

    refused = requests.post(f"{bands_service}/predict", json={"before": before, "after": png}, timeout=60)

    assert refused.status_code == 422 and refused.json()["error"] == "unreadable", refused.text
    assert "has no band B4" in refused.json()["detail"]
