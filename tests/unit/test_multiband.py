"""Multi-band rasters into the model: band ranges and normalisation from the training split, the
raster decode every path shares, a pretrained RGB stem fitted to more bands, pair inspection and
the service's guards on GeoTIFFs. Small generated rasters, no Ray."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch

from lensops.config import LensopsConfig, ModelConfig
from lensops.data import samples
from lensops.data.chipping import chip
from lensops.data.pairs import inspect_example, list_examples
from lensops.data.rasters import georeferenced, read_bytes, write_raster
from lensops.model import backbones, masks
from lensops.model.artifact import ModelSpec
from lensops.model.preprocess import BandStats, PreprocessSpec, band_stats, bands_to_uint8, model_view, to_uint8
from lensops.model.tasks import get_task
from lensops.serving.errors import ApiError
from lensops.serving.geotiff import answer_geotiff, require_image_answer
from lensops.serving.uploads import InputLimits, examine
from lensops.tracking import pyfunc

BANDS = ["B4", "B3", "B2", "B8"]
NODATA = -9999.0
LITE0 = ModelConfig(architecture="timm:tf_efficientnet_lite0", weights="efficientnet-lite0")
LIMITS = InputLimits(max_bytes=10_000_000, min_side=16, max_side=512, max_pixels=512 * 512, max_items=1)


def _geotiff(path: Path, data: np.ndarray, descriptions: tuple[str, ...] = tuple(BANDS)) -> Path:
    return write_raster(path, georeferenced(data, "EPSG:32633", (500_000.0, 4_000_000.0), 10.0, NODATA, descriptions))


def _spec(stats: BandStats, size: int = 32) -> PreprocessSpec:
    cfg = LensopsConfig.model_validate(
        {"preprocess": {"image_size": size, "bands": BANDS}, "model": {**CHANGE, "in_channels": 4}}
    )
    return PreprocessSpec.resolve(cfg.preprocess, band_stats=stats)


CHANGE = {**LITE0.model_dump(), "task": "change_detection"}
STATS = BandStats(ranges=((0.0, 0.5),) * 4, mean=(0.4,) * 4, std=(0.2,) * 4)


def test_bands_need_a_task_of_pairs_as_many_network_channels_and_no_colour_jitter() -> None:
    with pytest.raises(ValueError, match=re.escape("model.in_channels=3, but the inputs have 4 channels")):
        LensopsConfig.model_validate({"preprocess": {"bands": BANDS}, "model": CHANGE})
    with pytest.raises(ValueError, match=re.escape("rasters are read for tasks of several images")):
        LensopsConfig.model_validate(
            {"preprocess": {"bands": BANDS}, "model": {**LITE0.model_dump(), "in_channels": 4}}
        )
    with pytest.raises(ValueError, match=re.escape("preprocess.mean has 3 values for 4 channels")):
        LensopsConfig.model_validate({"preprocess": {"bands": BANDS, "mean": (0.5, 0.5, 0.5)}})
    with pytest.raises(ValueError, match=re.escape("augment.brightness changes RGB colour")):
        LensopsConfig.model_validate({"preprocess": {"bands": BANDS, "augment": {"brightness": 0.2}}})


def test_band_ranges_are_the_valid_pixels_percentiles_and_normalisation_follows_them() -> None:
    rng = np.random.default_rng(0)
    first = rng.uniform(0, 1, (2, 40, 40))
    first[1] *= 10
    valid = np.ones((40, 40), bool)
    valid[:, :5] = False
    first[:, :, :5] = 1e6  # nodata values must not stretch the range

    stats = band_stats([(first, valid)])

    low, high = np.percentile(first[:, valid], (1, 99), axis=1)
    assert np.allclose(stats.ranges, np.stack([low, high], 1))
    assert np.allclose(stats.mean, 0.5, atol=0.03) and np.allclose(stats.std, 1 / np.sqrt(12), atol=0.03)


def test_bands_map_onto_0_255_by_their_ranges_and_nodata_is_0() -> None:
    array = np.array([[[0.0, 0.25, 0.5, 9.0]], [[10.0, 15.0, 20.0, -1.0]]], np.float32)
    valid = np.array([[True, True, True, False]])

    pixels = bands_to_uint8(array, valid, ((0.0, 0.5), (10.0, 20.0)))

    assert pixels.tolist() == [[[0, 128, 255, 0]], [[0, 128, 255, 0]]]


def test_a_geotiff_decodes_to_the_models_bands_at_its_size(tmp_path: Path) -> None:
    data = np.full((5, 48, 48), 0.25, np.float32)
    data[:, :, :8] = NODATA
    path = _geotiff(tmp_path / "x.tif", data, ("B1", *BANDS))

    pixels = to_uint8(path.read_bytes(), _spec(STATS))

    assert pixels.shape == (4, 32, 32) and pixels.dtype == np.uint8
    assert (pixels[:, :, 8:] == 128).all() and (pixels[:, :, :4] == 0).all()


def test_a_pretrained_rgb_stem_takes_four_bands_by_timms_rule() -> None:
    rgb = backbones.build_model(LITE0, torch.nn.Identity)
    four = backbones.build_model(LITE0.model_copy(update={"in_channels": 4}), torch.nn.Identity)
    kernels, fitted = rgb.conv_stem.weight.detach(), four.conv_stem.weight.detach()

    assert fitted.shape[1] == 4
    assert torch.allclose(fitted[:, :3], kernels * 3 / 4) and torch.allclose(fitted[:, 3], kernels[:, 0] * 3 / 4)
    assert four(torch.rand(2, 4, 32, 32)).shape == rgb(torch.rand(2, 3, 32, 32)).shape


def test_a_change_detector_on_four_bands_draws_a_mask_per_tile() -> None:
    cfg = LITE0.model_copy(update={"in_channels": 4, "task": "change_detection"})
    network = get_task("change_detection").build_network(cfg, ["unchanged", "changed"]).eval()
    with torch.no_grad():
        logits = network(torch.rand(2, 4, 32, 32), torch.rand(2, 4, 32, 32))

    assert logits.shape == (2, 1, 32, 32)


def test_torchvision_backbones_refuse_other_than_three_channels() -> None:
    with pytest.raises(ValueError, match=re.escape("model.in_channels=4 needs a timm:<name> architecture")):
        backbones.build_model(ModelConfig(architecture="resnet18", in_channels=4), torch.nn.Identity)


def test_chipped_geotiff_pairs_pass_inspection_and_pairs_of_other_bands_do_not(tmp_path: Path) -> None:
    samples.write_change_rasters(tmp_path / "scenes", 1, 64, seed=0)
    scene = tmp_path / "scenes" / "scene000-000"
    chip(scene / "before.tif", scene / "after.tif", scene / "mask.tif", tmp_path / "tiles", size=32, min_valid=0)
    rows = list_examples(str(tmp_path / "tiles"), ("before", "after", "mask")).to_dict("records")
    kept = [inspect_example(pafs.LocalFileSystem(), row, ("before", "after", "mask"), 16, 10**6) for row in rows]
    three = _geotiff(tmp_path / "three.tif", np.zeros((3, 32, 32), np.float32), ("B4", "B3", "B2"))
    other = inspect_example(
        pafs.LocalFileSystem(), {**rows[0], "after": str(three)}, ("before", "after", "mask"), 16, 10**6
    )

    assert len(kept) == 4 and all(result["issue"] is None for result in kept)
    assert {result["width"] for result in kept} == {32}
    assert (other["issue"], other["detail"]) == (
        "mismatched",
        "bands differ: before 4 bands of float32, after 3 bands of float32",
    )


def test_the_service_takes_a_geotiff_of_the_models_bands_and_refuses_others(tmp_path: Path) -> None:
    data = np.random.default_rng(1).uniform(0, 0.5, (4, 40, 40)).astype(np.float32)
    spec = _spec(STATS)
    good = examine(_geotiff(tmp_path / "good.tif", data).read_bytes(), spec, LIMITS)
    small = _geotiff(tmp_path / "small.tif", data[:, :8, :8]).read_bytes()
    unnamed = _geotiff(tmp_path / "unnamed.tif", data, ()).read_bytes()

    assert good.image.shape == (4, 32, 32) and good.facts["input_format"] == "GTiff"
    assert len(good.facts["input_mean"]) == 4
    for upload, code in ((small, "too_small"), (unnamed, "unreadable")):
        with pytest.raises(ApiError) as info:
            examine(upload, spec, LIMITS)
        assert info.value.code == code
    assert "has no band B4" in info.value.detail


def test_the_model_sees_the_centre_crop_of_the_resized_upload() -> None:
    spec = PreprocessSpec(image_size=32, resize_size=40, mean=(0.5,) * 3, std=(0.5,) * 3)

    assert model_view(80, 80, spec) == (8.0, 8.0, 2.0, 2.0)
    assert model_view(80, 160, spec) == (8.0, 48.0, 2.0, 2.0)
    assert model_view(64, 64, spec.model_copy(update={"resize_size": 32})) == (0.0, 0.0, 2.0, 2.0)


def test_a_mask_answers_as_a_geotiff_where_the_model_looked(tmp_path: Path) -> None:
    upload = _geotiff(tmp_path / "after.tif", np.zeros((4, 64, 64), np.float32)).read_bytes()
    changed = np.zeros((32, 32), bool)
    changed[4:10, 20:30] = True
    spec = _model_spec()

    raster = read_bytes(answer_geotiff({"mask": masks.to_png(changed)}, spec, upload))

    assert str(raster.crs) == "EPSG:32633"
    assert tuple(raster.transform)[:6] == (20.0, 0.0, 500_000.0, 0.0, -20.0, 4_000_000.0)  # 10 m pixels, halved
    assert ((raster.data[0] > 0) == changed).all()
    png = _png(tmp_path)
    with pytest.raises(ApiError) as info:
        answer_geotiff({"mask": masks.to_png(changed)}, spec, png)
    assert (info.value.code, info.value.status) == ("geotiff_unavailable", 422)
    with pytest.raises(ApiError, match="a classification model answers no image"):
        require_image_answer(spec.model_copy(update={"model": LITE0}))


def _model_spec() -> ModelSpec:
    return ModelSpec(
        model=LITE0.model_copy(update={"task": "change_detection", "in_channels": 4}),
        classes=["unchanged", "changed"],
        preprocess=_spec(STATS),
        dataset_version="ds",
        data_source="here",
        config={},
        git_commit="",
    )


def test_a_band_models_input_example_is_a_geotiff_that_decodes_back_to_its_image() -> None:
    spec = _model_spec()
    image = np.random.default_rng(2).integers(0, 256, (4, 32, 32), dtype=np.uint8)

    frame = pyfunc.example_frame(spec, image)

    assert list(frame.columns) == ["before", "after"]
    assert np.abs(to_uint8(frame["after"][0], spec.preprocess).astype(int) - image).max() <= 1
    assert any(line.startswith("rasterio==") for line in pyfunc.requirements(spec))


def _png(tmp_path: Path) -> bytes:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "x.png")
    return (tmp_path / "x.png").read_bytes()
