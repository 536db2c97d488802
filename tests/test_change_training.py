"""Change detection through the one training path, on a real local Ray and a real MLflow store:
pair tiles with planted bad ones -> catalog -> Ray Train (1 epoch) -> test report -> registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from lensops.config import LensopsConfig, load_config
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
    overrides = [
        f"data.source={data / samples.MANIFEST}",
        f"data.work_dir={work}",
        f"tracking.tracking_uri={mlflow_uri}",
        "tracking.experiment=test-change",
        "tracking.registered_model=test-change",
        f"preprocess.image_size={TILE}",
        "data.split={train: 0.5, val: 0.25, test: 0.25}",  # whole scenes: a few per split
        "train.epochs=1",
        "train.warmup_epochs=0",
    ]
    return load_config(REPO / "configs" / "change.yaml", overrides)


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
