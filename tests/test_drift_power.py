"""The drift checks on real images and real embeddings: 600 ELPV cells, EfficientNet-Lite0
with its offline ImageNet weights, scored once per shift; windows resampled with fixed seeds.

Half the cells make the reference profile, the other half the pool new windows are drawn
from. Unshifted windows must rarely drift; every realistic shift of the pool must be found.
No Ray: this is the statistics of the monitor, on what the model tier would compute."""

from __future__ import annotations

import pytest
from PIL import Image

from lensops.config import ModelConfig, MonitorConfig
from lensops.data import samples
from lensops.model.artifact import ModelSpec
from lensops.model.backbones import pretrained_normalization
from lensops.model.forward import ModelInfo, Predictor
from lensops.model.preprocess import PreprocessSpec
from lensops.monitoring import power
from lensops.monitoring.profile import Profile
from lensops.monitoring.window import Window

pytestmark = pytest.mark.slow

SETTINGS = MonitorConfig(min_window=50)
WINDOW = 100
SHIFTS = {"brightness": -0.15, "contrast": -0.3, "blur": 3.0, "noise": 0.04}
"""Each about as strong as a day of changed light, a hazy lens, a focus slip (3 px on the 300 px
cell, 1 px at the model's 96), a noisier sensor."""


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Image.Image], list[str]]:
    out = tmp_path_factory.mktemp("elpv")
    samples.write_elpv(out, limit=600)
    paths = sorted(out.rglob("*.png"))
    return [Image.open(p).convert("RGB") for p in paths], [p.parent.name for p in paths]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    model = ModelConfig(architecture="timm:tf_efficientnet_lite0", weights="efficientnet-lite0")
    mean, std = pretrained_normalization(model)
    spec = ModelSpec(
        model=model,
        classes=["defective", "functional"],
        preprocess=PreprocessSpec(image_size=96, resize_size=96, mean=mean, std=std),
        dataset_version="elpv-600",
        data_source="elpv",
        config={},
        git_commit="x",
    )
    return Predictor(spec.build_network(), spec, ModelInfo("lite0", "1", "-", "elpv-600"))


@pytest.fixture(scope="module")
def scored(cells: tuple[list[Image.Image], list[str]], predictor: Predictor) -> dict[str, Window]:
    """The reference half, the pool half, and the pool under each shift: one pass each."""
    images, _ = cells
    windows = {"reference": power.score(predictor, images[0::2]), "pool": power.score(predictor, images[1::2])}
    for shift, strength in SHIFTS.items():
        windows[shift] = power.score(predictor, power.shifted(images[1::2], shift, strength))
    return windows


@pytest.fixture(scope="module")
def profile(scored: dict[str, Window]) -> Profile:
    return power.reference(scored["reference"])


def test_unshifted_windows_rarely_drift(profile: Profile, scored: dict[str, Window]) -> None:
    counted = power.drift_rate(profile, scored["pool"], WINDOW, 20, SETTINGS)
    assert counted.drift <= 1, counted.top()


@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_each_realistic_shift_is_found(profile: Profile, scored: dict[str, Window], shift: str) -> None:
    counted = power.drift_rate(profile, scored[shift], WINDOW, 10, SETTINGS)
    assert counted.drift >= 9, f"{shift}: {counted.drift} of 10 windows; fired {counted.top()}"


def test_a_different_class_mix_is_found(
    profile: Profile, scored: dict[str, Window], cells: tuple[list[Image.Image], list[str]]
) -> None:
    labels = cells[1][1::2]  # 59% defective in these 600 cells
    mostly_functional = power.class_weights(labels, "functional", 0.95)
    counted = power.drift_rate(profile, scored["pool"], WINDOW, 10, SETTINGS, weights=mostly_functional)
    assert counted.drift >= 9, f"{counted.drift} of 10 windows; fired {counted.top()}"


def test_the_embedding_check_sees_what_the_input_statistics_do_not(profile: Profile, scored: dict[str, Window]) -> None:
    """Blur keeps every image's mean; the network's features move."""
    counted = power.drift_rate(profile, scored["blur"], WINDOW, 10, SETTINGS)
    assert counted.fired["embedding"] >= 9 and not any(name.startswith("input_mean") for name in counted.fired)


def test_scoring_is_deterministic(predictor: Predictor, cells: tuple[list[Image.Image], list[str]]) -> None:
    images = cells[0][:8]
    first, second = power.score(predictor, images), power.score(predictor, images)
    assert first.labels == second.labels and (first.embeddings == second.embeddings).all()
