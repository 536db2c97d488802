"""S3 sources against a real S3 API (moto server on loopback), read by Ray Data workers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from lensops.config import DataConfig
from lensops.data import storage
from lensops.data.catalog import Catalog, build_catalog, list_files
from lensops.data.loading import split_datasets
from lensops.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from lensops.model.tasks import get_task

BUCKET = "lensops-test"
SPEC = PreprocessSpec(image_size=32, resize_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lensops.data.samples import add_bad_files, write_synthetic

    out = tmp_path_factory.mktemp("s3-source")
    write_synthetic(out, count_per_class=12, size=40, seed=3)
    add_bad_files(out)
    return out


@pytest.fixture(scope="module")
def s3_uri(local_dir: Path, s3_upload: Callable[[Path, str, str], str]) -> str:
    return s3_upload(local_dir, BUCKET, "syn")


@pytest.fixture(scope="module")
def local_catalog(ray_cluster: None, local_dir: Path) -> Catalog:
    return build_catalog(DataConfig(source=str(local_dir)))


@pytest.fixture(scope="module")
def s3_catalog(ray_cluster: None, s3_uri: str) -> Catalog:
    return build_catalog(DataConfig(source=s3_uri))


def relative(paths: list[str], root: str) -> list[str]:
    return sorted(p.removeprefix(root.rstrip("/") + "/") for p in paths)


def skipped(catalog: Catalog, root: str) -> dict[str, str]:
    prefix = root.rstrip("/") + "/"
    return {item.path.removeprefix(prefix): item.reason.value for item in catalog.report.skipped}


def test_the_filesystem_follows_the_aws_environment(s3_server: str) -> None:
    fs, path = storage.resolve(f"s3://{BUCKET}/syn/")

    assert isinstance(fs, pafs.S3FileSystem)
    assert path == f"{BUCKET}/syn"
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server
    assert fs.region == "us-east-1"


def test_listing_an_s3_folder_gives_s3_uris_and_labels(s3_uri: str, local_dir: Path) -> None:
    files = list_files(s3_uri)

    assert all(path.startswith(f"{s3_uri}/") for path in files["path"])
    local = [str(p) for p in local_dir.resolve().glob("*/*.png")]
    assert relative(files["path"].tolist(), s3_uri) == relative(local, str(local_dir.resolve()))
    assert set(files["label"]) == {"clean", "dusty"}


def test_an_s3_catalog_matches_the_local_copy(s3_catalog: Catalog, local_catalog: Catalog, local_dir: Path) -> None:
    assert s3_catalog.version == local_catalog.version
    assert s3_catalog.classes == local_catalog.classes
    assert s3_catalog.report.class_counts == local_catalog.report.class_counts
    assert (s3_catalog.report.total_files, s3_catalog.report.kept_files) == (
        local_catalog.report.total_files,
        local_catalog.report.kept_files,
    )
    assert skipped(s3_catalog, s3_catalog.source) == skipped(local_catalog, str(local_dir.resolve()))
    assert len(s3_catalog.report.skipped) == 7
    by_sha = s3_catalog.table.set_index("sha256")["split"].to_dict()
    assert by_sha == local_catalog.table.set_index("sha256")["split"].to_dict()


def test_an_s3_manifest_resolves_relative_paths_to_s3_uris(s3_uri: str, local_catalog: Catalog) -> None:
    catalog = build_catalog(DataConfig(source=f"{s3_uri}/manifest.csv"))

    assert catalog.version == local_catalog.version
    assert all(path.startswith(f"{s3_uri}/") for path in catalog.table["path"])
    assert "dust_level" in catalog.table.columns


def test_ray_data_workers_read_and_decode_images_from_s3(s3_catalog: Catalog, s3_uri: str) -> None:
    cfg = DataConfig(source=s3_uri, decode_batch_size=8)
    datasets = split_datasets(s3_catalog, get_task("classification"), SPEC, cfg)

    for split, ds in datasets.items():
        rows = 0
        for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
            n = len(batch["target"])
            assert batch["image"].shape == (n, 3, 32, 32)
            assert batch["image"].dtype == np.uint8
            assert batch["target"].dtype == np.int64
            assert batch["image"].std() > 0
            rows += n
        assert rows == len(s3_catalog.split(split))


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lensops.data.samples import add_bad_pairs, write_change

    out = tmp_path_factory.mktemp("s3-pairs")
    write_change(out, scenes=2, tile=32, seed=4)
    add_bad_pairs(out)
    return out


def test_a_manifest_of_pairs_on_s3_gives_the_local_copys_catalog(
    ray_cluster: None, pairs_dir: Path, s3_upload: Callable[[Path, str, str], str]
) -> None:
    uri = s3_upload(pairs_dir, BUCKET, "pairs")
    task = get_task("change_detection")

    remote = build_catalog(DataConfig(source=f"{uri}/manifest.csv"), task)
    local = build_catalog(DataConfig(source=str(pairs_dir / "manifest.csv")), task)

    assert remote.version == local.version and remote.report.kept_files == local.report.kept_files == 2 * 16
    assert (
        skipped(remote, uri)
        == skipped(local, str(pairs_dir))
        == {
            "planted/grey-mask/before.png": "bad_mask",
            "planted/no-after/before.png": "unreadable",
            "planted/size-mismatch/before.png": "mismatched",
        }
    )
    assert all(path.startswith(f"{uri}/scene") for path in remote.table["after"])
