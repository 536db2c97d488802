"""Ray Data pipelines: decoded uint8 batches with the right targets, shards, augmentation.

Ray Data does not promise row order, so images are matched to catalog rows by a fingerprint
of their decoded pixels (computed here directly, outside Ray, from the same spec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

from lensops.config import AugmentConfig, DataConfig
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.loading import augmented, split_datasets
from lensops.data.splits import SPLITS
from lensops.data.validation import DataValidationError
from lensops.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, to_uint8
from lensops.model.tasks import get_task
from lensops.monitoring.profile import input_stats

SPEC = PreprocessSpec(image_size=32, resize_size=36, mean=IMAGENET_MEAN, std=IMAGENET_STD)
CLASSIFICATION = get_task("classification")


def fingerprint(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def decoded_directly(rows: pd.DataFrame) -> list[str]:
    return [fingerprint(to_uint8(Path(path).read_bytes(), SPEC)) for path in rows["path"]]


def batches(ds: ray.data.Dataset, batch_size: int = 10) -> list[dict[str, np.ndarray]]:
    return list(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))


def targets_by_fingerprint(found: list[dict[str, np.ndarray]]) -> dict[str, object]:
    pairs = [
        (fingerprint(image), target)
        for batch in found
        for image, target in zip(batch["image"], batch["target"], strict=True)
    ]
    table = dict(pairs)
    assert len(table) == len(pairs), "an image came out twice"
    return table


@pytest.fixture(scope="module")
def data_cfg(synthetic_dir: Path) -> DataConfig:
    return DataConfig(source=str(synthetic_dir), decode_batch_size=16)


@pytest.fixture(scope="module")
def datasets(synthetic_catalog: Catalog, data_cfg: DataConfig) -> dict[str, ray.data.Dataset]:
    return split_datasets(synthetic_catalog, CLASSIFICATION, SPEC, data_cfg)


@pytest.fixture(scope="module")
def expected(synthetic_catalog: Catalog) -> dict[str, dict[str, int]]:
    """split -> {pixel fingerprint: label_index}, decoded without Ray."""
    result = {}
    for split in SPLITS:
        rows = synthetic_catalog.split(split)
        result[split] = dict(zip(decoded_directly(rows), rows["label_index"], strict=True))
    assert sum(map(len, result.values())) == len(synthetic_catalog.table), "fingerprints collide"
    return result


def test_every_split_yields_uint8_images_and_int64_targets(
    datasets: dict[str, ray.data.Dataset], synthetic_catalog: Catalog
) -> None:
    assert set(datasets) == set(SPLITS)
    for split, ds in datasets.items():
        found = batches(ds)
        assert sum(len(b["target"]) for b in found) == len(synthetic_catalog.split(split))
        for batch in found:
            n = len(batch["target"])
            assert set(batch) == {"image", "target"}
            assert batch["image"].dtype == np.uint8
            assert batch["image"].shape == (n, 3, 32, 32)
            assert batch["target"].dtype == np.int64
            assert batch["target"].shape == (n,)


def test_every_split_holds_exactly_its_catalog_images_with_their_labels(
    datasets: dict[str, ray.data.Dataset], expected: dict[str, dict[str, int]]
) -> None:
    for split, ds in datasets.items():
        assert targets_by_fingerprint(batches(ds)) == expected[split]


def test_both_classes_appear_in_every_split(expected: dict[str, dict[str, int]]) -> None:
    for split in SPLITS:
        assert set(expected[split].values()) == {0, 1}


def test_a_regression_column_gives_float32_targets_from_the_manifest(ray_cluster: None, synthetic_dir: Path) -> None:
    cfg = DataConfig(
        source=str(synthetic_dir / "manifest.csv"),
        target_column="dust_level",
        decode_batch_size=32,
        cache_decoded=False,
    )
    catalog = build_catalog(cfg)

    datasets = split_datasets(catalog, get_task("regression"), SPEC, cfg)

    for split, ds in datasets.items():
        rows = catalog.split(split)
        found = batches(ds)
        assert all(batch["target"].dtype == np.float32 for batch in found)
        want = dict(zip(decoded_directly(rows), rows["dust_level"].astype(np.float32), strict=True))
        assert targets_by_fingerprint(found) == want


def test_streaming_split_shards_partition_the_train_split(
    datasets: dict[str, ray.data.Dataset], expected: dict[str, dict[str, int]]
) -> None:
    shards = datasets["train"].streaming_split(2, equal=True)
    seen: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def consume(index: int) -> None:
        try:
            for batch in shards[index].iter_batches(batch_size=4, batch_format="numpy"):
                seen[index].extend(fingerprint(image) for image in batch["image"])
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a shard iterator hung"

    first, second = set(seen[0]), set(seen[1])
    train = set(expected["train"])
    assert len(first) == len(seen[0]) and len(second) == len(seen[1])
    assert first.isdisjoint(second)
    assert len(first) == len(second)
    assert first | second <= train
    # equal=True may drop the odd row out so that both shards have the same length.
    assert len(train - (first | second)) == len(train) % 2


def test_augmentation_runs_on_the_cached_images_with_their_targets(
    datasets: dict[str, ray.data.Dataset], expected: dict[str, dict[str, int]]
) -> None:
    flipped = batches(augmented(datasets["val"], CLASSIFICATION, AugmentConfig(hflip=1.0)))
    mirrored_back = [{"image": batch["image"][..., ::-1], "target": batch["target"]} for batch in flipped]

    assert all(batch["image"].dtype == np.uint8 for batch in flipped)
    assert targets_by_fingerprint(mirrored_back) == expected["val"]
    unchanged = batches(augmented(datasets["val"], CLASSIFICATION, AugmentConfig(hflip=0.0)))
    assert targets_by_fingerprint(unchanged) == expected["val"]


def test_input_stats_match_numpy_over_the_same_images(
    datasets: dict[str, ray.data.Dataset],
) -> None:
    images = np.concatenate([b["image"] for b in batches(datasets["test"])]).astype(np.float64) / 255

    stats = input_stats(b["image"] for b in batches(datasets["test"]))

    np.testing.assert_allclose(stats.mean, images.mean(axis=(2, 3)), rtol=1e-5)  # per image, float32
    np.testing.assert_allclose(stats.std, images.std(axis=(2, 3)), rtol=1e-4, atol=1e-6)
    channels = stats.channels
    assert channels.pixels == images.shape[0] * 32 * 32
    np.testing.assert_allclose(channels.mean, images.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(channels.std, images.std(axis=(0, 2, 3)), rtol=1e-5)


def test_an_empty_split_is_an_error_naming_it(synthetic_catalog: Catalog, data_cfg: DataConfig) -> None:
    all_train = dataclasses.replace(synthetic_catalog, table=synthetic_catalog.table.assign(split="train"))
    lazy = data_cfg.model_copy(update={"cache_decoded": False})

    with pytest.raises(DataValidationError, match=r"the val split of .* is empty"):
        split_datasets(all_train, CLASSIFICATION, SPEC, lazy)
