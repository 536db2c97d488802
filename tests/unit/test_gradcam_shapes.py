"""Grad-CAM on every kind of shipped backbone: one map per image at the backbone's feature
resolution, scaled to 0..1, of the predicted class unless one is asked for; a class that the
model does not have is refused with the choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import model_spec

from lensops.model.artifact import ModelSpec
from lensops.model.explain import described, grad_cam, target_index
from lensops.model.forward import Forward

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(architecture: str, side: int) -> ModelSpec:
    spec = model_spec("classification", ["crack", "dust", "ok"], architecture=architecture)
    return spec.model_copy(update={"preprocess": spec.preprocess.model_copy(update={"image_size": side})})


@pytest.mark.parametrize(
    ("architecture", "side", "cells"),
    [("resnet18", 64, 2), ("timm:tf_efficientnet_lite0", 128, 4), ("vit_b_16", 224, 14)],
)
def test_one_map_per_image_at_the_feature_resolution(architecture: str, side: int, cells: int) -> None:
    torch.manual_seed(0)
    spec = _spec(architecture, side)
    forward = Forward(spec.build_network(load_weights=False).eval(), spec)
    images = np.random.default_rng(0).integers(0, 256, (2, 3, side, side), dtype=np.uint8)

    explained = grad_cam(forward, {"image": images}, [None, 2])

    top = int(forward.outputs({"image": images[:1]})[0].argmax())
    assert [e.target for e in explained] == [top, 2]
    for explanation in explained:
        assert explanation.cam.shape == (cells, cells)
        assert explanation.cam.min() == pytest.approx(0) and explanation.cam.max() == pytest.approx(1)
    shown = described(explained[1], images[1], spec)
    assert shown["target"] == "ok" and np.array(shown["cam"]).shape == (cells, cells)


def test_a_target_is_a_class_of_the_model() -> None:
    spec = _spec("resnet18", 32)
    assert target_index(spec, None) is None
    assert target_index(spec, "dust") == 1
    with pytest.raises(ValueError, match="unknown target 'rust': explain one of crack, dust, ok"):
        target_index(spec, "rust")
