"""The model artifact: safetensors weights plus spec.json round-trip exactly, models saved in
the earlier format keep loading, nothing is a pickle, and a loaded model answers through the
one forward path."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from factories import model_spec
from safetensors.torch import save_file
from torch import nn

from lensops.config import LensopsConfig
from lensops.model import artifact
from lensops.model.artifact import ChannelStats, ModelSpec
from lensops.model.forward import Forward, ModelInfo, Predictor, is_channels_last
from lensops.model.preprocess import PreprocessSpec

CLASSES = ["crack", "dust", "ok"]
PREPROCESS = PreprocessSpec(image_size=32, resize_size=36, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
INFO = ModelInfo(name="lensops-model", version="3", run_id="run-1", dataset_version="ds-x")

pytestmark = pytest.mark.usefixtures("one_thread")


def make_spec(task: str = "classification", **model: Any) -> ModelSpec:
    spec = model_spec(task, CLASSES if task == "classification" else [], **model)
    return spec.model_copy(
        update={
            "preprocess": PREPROCESS,
            "data_source": "s3://bucket/cells",
            "config": LensopsConfig().model_dump(mode="json"),
            "git_commit": "abc123",
            "metrics": {"test_macro_f1": 0.75},
            "baseline": ChannelStats(mean=(0.4, 0.5, 0.6), std=(0.1, 0.2, 0.3), pixels=1024),
        }
    )


def trained_network(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """A network with random weights and non-default batch-norm statistics."""
    torch.manual_seed(seed)
    model = spec.build_network(load_weights=False)
    for name, buffer in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.copy_(torch.rand_like(buffer) + 0.5)
    return model.eval()


def images(count: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)


def assert_same_state(first: nn.Module | dict[str, torch.Tensor], second: nn.Module) -> None:
    expected = first if isinstance(first, dict) else first.state_dict()
    actual = second.state_dict()
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


def earlier_spec_json(task: str = "classification", dropout: float = 0.0) -> dict[str, Any]:
    """spec.json as models registered before the task refactor wrote it."""
    return {
        "model": {
            "architecture": "resnet18",
            "task": task,
            "weights": "none",
            "freeze_backbone": False,
            "backbone_lr_scale": 1.0,
            "dropout": dropout,
        },
        "classes": ["bad", "good"] if task == "classification" else [],
        "target_column": "dust_level" if task == "regression" else None,
        "preprocess": {"image_size": 32, "resize_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "dataset_version": "ds-old",
        "data_source": "data/elpv",
        "config": {"train": {"lr": 0.001, "epochs": 5}, "data": {"source": "data/elpv"}},
        "git_commit": "0123abc",
        "metrics": {"test_accuracy": 0.5},
        "baseline": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "pixels": 4096},
    }


def earlier_network(outputs: int, dropout: float) -> nn.Module:
    """The network the earlier code built: torchvision's backbone, its last linear layer replaced."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None)
    head = nn.Linear(model.fc.in_features, outputs)
    model.fc = nn.Sequential(nn.Dropout(dropout), head) if dropout else head
    return model.eval()


# ---- save and load -----------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_save_then_load_gives_the_same_weights_bit_for_bit_and_the_same_spec(tmp_path: Path, task: str) -> None:
    spec = make_spec(task)
    model = trained_network(spec)

    returned = artifact.save(tmp_path / "model", model, spec)
    loaded, loaded_spec = artifact.load(tmp_path / "model")

    assert returned == tmp_path / "model"
    assert_same_state(model, loaded)
    assert loaded_spec == spec
    assert not loaded.training


def test_a_loaded_model_gives_the_same_outputs_as_the_saved_one(tmp_path: Path) -> None:
    spec = make_spec()
    model = trained_network(spec)
    batch = {"image": images()}

    loaded, loaded_spec = artifact.load(artifact.save(tmp_path, model, spec))

    assert np.array_equal(Forward(loaded, loaded_spec).outputs(batch), Forward(model, spec).outputs(batch))


def test_save_and_load_keep_a_dropout_head_and_a_frozen_backbone(tmp_path: Path) -> None:
    spec = make_spec(dropout=0.3, freeze_backbone=True)
    model = trained_network(spec)

    loaded, loaded_spec = artifact.load(artifact.save(tmp_path, model, spec))

    assert_same_state(model, loaded)
    assert loaded_spec.model.dropout == 0.3
    assert isinstance(loaded.fc, nn.Sequential)


def test_load_spec_reads_the_spec_alone(tmp_path: Path) -> None:
    spec = make_spec()
    artifact.save(tmp_path, trained_network(spec), spec)

    assert artifact.load_spec(tmp_path) == spec


def test_save_writes_exactly_safetensors_weights_and_a_json_spec_and_no_pickle(tmp_path: Path) -> None:
    spec = make_spec()
    model = trained_network(spec)

    artifact.save(tmp_path, model, spec)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "spec.json"]
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert not data.startswith(b"\x80"), f"{path.name} is a pickle"
        assert not data.startswith(b"PK"), f"{path.name} is a zip (torch.save)"
    weights = (tmp_path / "model.safetensors").read_bytes()
    (header_length,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8 : 8 + header_length])
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    assert json.loads((tmp_path / "spec.json").read_text())["classes"] == CLASSES


# ---- the earlier format ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "dropout", "outputs"),
    [("classification", 0.0, 2), ("classification", 0.2, 2), ("regression", 0.0, 1)],
)
def test_a_model_saved_in_the_earlier_format_still_loads(
    tmp_path: Path, task: str, dropout: float, outputs: int
) -> None:
    reference = earlier_network(outputs, dropout)
    state = {k: v.detach().contiguous() for k, v in reference.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(earlier_spec_json(task, dropout)))

    loaded, spec = artifact.load(tmp_path)

    assert_same_state(state, loaded)
    assert spec.model.task == task
    assert spec.task.name == task
    assert spec.preprocess == PreprocessSpec(image_size=32, resize_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert spec.baseline == ChannelStats(mean=(0.5,) * 3, std=(0.2,) * 3, pixels=4096)
    assert spec.metrics == {"test_accuracy": 0.5}
    assert spec.config == {"train": {"lr": 0.001, "epochs": 5}, "data": {"source": "data/elpv"}}
    batch = torch.from_numpy(images(2))
    with torch.no_grad():
        expected = reference((batch.float() / 255 - 0.5) / 0.25)
    assert torch.allclose(Forward(loaded, spec).logits({"image": batch}), expected, atol=1e-5)


def test_an_earlier_spec_without_baseline_and_metrics_loads_with_their_defaults(tmp_path: Path) -> None:
    document = earlier_spec_json()
    del document["baseline"], document["metrics"], document["target_column"]
    (tmp_path / "spec.json").write_text(json.dumps(document))

    spec = artifact.load_spec(tmp_path)

    assert (spec.baseline, spec.metrics, spec.target_column) == (None, {}, None)


# ---- answers -----------------------------------------------------------------------------


def test_the_predictor_gives_one_answer_per_image_decoded_from_the_forward_outputs() -> None:
    spec = make_spec()
    model = trained_network(spec)
    batch = {"image": images(5)}

    answers = Predictor(model, spec, INFO).predict(batch)

    outputs = Forward(model, spec).outputs(batch)
    assert len(answers) == 5
    assert answers == spec.task.answers(outputs, CLASSES)
    assert [a["prediction"] for a in answers] == [CLASSES[i] for i in outputs.argmax(1)]
    assert [a["confidence"] for a in answers] == [float(p) for p in outputs.max(1)]
    assert all(list(a["probabilities"]) == CLASSES for a in answers)


def test_the_predictor_puts_the_network_in_eval_mode() -> None:
    spec = make_spec()
    model = trained_network(spec).train()

    Predictor(model, spec, INFO)

    assert not model.training


def test_the_predictor_convolves_channels_last_with_the_answers_of_the_default_layout() -> None:
    spec = make_spec()
    model = trained_network(spec).eval()
    batch = {"image": images(5)}
    contiguous = Forward(model, spec).outputs(batch)

    predictor = Predictor(model, spec, INFO)

    assert is_channels_last(predictor.forward.network) and not is_channels_last(trained_network(spec))
    assert predictor.forward.inputs(batch)[0].is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(predictor.forward.outputs(batch), contiguous, atol=1e-5)


def test_the_predictor_answers_a_loaded_model_like_the_saved_one(tmp_path: Path) -> None:
    spec = make_spec()
    model = trained_network(spec)
    batch = {"image": images(4), "target": np.zeros(4, dtype=np.int64)}

    loaded, loaded_spec = artifact.load(artifact.save(tmp_path, model, spec))

    assert Predictor(loaded, loaded_spec, INFO).predict(batch) == Predictor(model, spec, INFO).predict(batch)


def test_regression_answers_are_values_without_confidence() -> None:
    spec = make_spec("regression")
    model = trained_network(spec)
    batch = {"image": images(3)}

    answers = Predictor(model, spec, INFO).predict(batch)

    outputs = Forward(model, spec).outputs(batch)
    assert outputs.shape == (3,)
    assert answers == [{"prediction": float(v), "confidence": None} for v in outputs]


def test_model_info_is_the_model_block_of_an_answer() -> None:
    assert INFO.as_dict() == {"name": "lensops-model", "version": "3", "run_id": "run-1", "dataset_version": "ds-x"}
