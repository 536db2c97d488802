"""The ONNX Runtime path (``serve.runtime`` / ``batch.runtime: onnxruntime``) answers as the
torch path does: the same probabilities (or values) and embeddings within 1e-4, at any batch
size, from the graph a version keeps beside its weights or, for a version registered without
one, from the graph exported when it is loaded. (No Ray; the exports take seconds each.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from factories import model_spec

from lensops.config import LensopsConfig
from lensops.model import artifact, onnx_forward
from lensops.model.forward import ModelInfo, Predictor
from lensops.model.onnx_forward import OnnxForward
from lensops.tracking import registry
from lensops.training.fit import TrainOutcome

INFO = ModelInfo("m", "1", "r", "ds-x")


def _images(count: int, seed: int, side: int = 32) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).integers(0, 256, (count, 3, side, side), dtype=np.uint8)}


@pytest.fixture(scope="module", params=["classification", "regression"])
def version(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version folder whose graph was written beside its weights, as at registration."""
    spec = model_spec(request.param)
    torch.manual_seed(0)
    folder = artifact.save(tmp_path_factory.mktemp(request.param), spec.build_network(load_weights=False), spec)
    onnx_forward.write(folder, *artifact.load(folder))
    return folder


@pytest.mark.parametrize("count", [1, 5])
def test_onnxruntime_answers_and_embeds_as_torch_does(version: Path, count: int) -> None:
    network, spec = artifact.load(version)
    torch_side = Predictor(network, spec, INFO)
    onnx_side = Predictor(network, spec, INFO, graph=(version / onnx_forward.FILE).read_bytes())
    batch = _images(count, seed=count)

    expected, answers = torch_side.predict(batch, embed=True), onnx_side.predict(batch, embed=True)

    assert len(answers) == count
    for ours, theirs in zip(answers, expected, strict=True):
        assert ours.get("prediction") == pytest.approx(theirs.get("prediction"), abs=1e-4)
        assert ours.get("probabilities", {}) == pytest.approx(theirs.get("probabilities", {}), abs=1e-4)
        assert np.allclose(ours["embedding"], theirs["embedding"], atol=1e-4)


def test_a_version_registered_without_its_graph_is_exported_when_loaded(
    classification_run: TrainOutcome, classification_cfg: LensopsConfig
) -> None:
    uri, name = classification_cfg.tracking.tracking_uri, classification_cfg.tracking.registered_model
    version = classification_run.version  # trained with serve.runtime torch: no graph registered
    torch_side = registry.load_predictor(uri, name, version)
    onnx_side = registry.load_predictor(uri, name, version, runtime="onnxruntime")
    batch = _images(4, seed=3, side=torch_side.spec.preprocess.image_size)

    assert isinstance(onnx_side.runner, OnnxForward)
    for ours, theirs in zip(onnx_side.predict(batch), torch_side.predict(batch), strict=True):
        assert ours["prediction"] == theirs["prediction"]
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-4)


@pytest.mark.parametrize("section", ["serve", "batch"])
def test_onnxruntime_on_a_gpu_is_refused_with_what_to_set(section: str) -> None:
    with pytest.raises(ValueError, match="runtime onnxruntime runs on the CPU"):
        LensopsConfig.model_validate({section: {"runtime": "onnxruntime", "device": "cuda"}})
