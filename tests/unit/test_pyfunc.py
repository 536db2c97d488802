"""A version folder as an MLflow pyfunc model: loaded by MLflow alone, it answers as lensops'
own predictor does, its flavor points at the version's one copy of the weights, nothing is
pickled; and the licence a dataset states at its root."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from factories import model_spec
from PIL import Image

from lensops.data import samples
from lensops.data.sources import NOT_STATED, read_licence
from lensops.model import artifact
from lensops.model.forward import Forward, ModelInfo, Predictor
from lensops.model.preprocess import to_uint8
from lensops.tracking import pyfunc

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(seed: int, side: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_mlflow_loads_a_version_folder_that_answers_as_the_predictor(tmp_path: Path, task: str) -> None:
    spec = model_spec(task)
    torch.manual_seed(0)
    network = spec.build_network(load_weights=False).eval()
    folder = artifact.save(tmp_path / "model", network, spec)
    example = pyfunc.example_frame(spec, to_uint8(_png(0), spec.preprocess))
    pyfunc.write(folder, Forward(network, spec), spec, example)
    uploads = [_png(seed) for seed in range(1, 5)]

    frame = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame({"image": uploads}))

    predictor = Predictor(*artifact.load(folder), ModelInfo("m", "1", "r", "ds-x"))
    answers = predictor.predict({"image": np.stack([to_uint8(data, spec.preprocess) for data in uploads])})
    for row, answer in zip(frame.to_dict("records"), answers, strict=True):
        assert row["prediction"] == pytest.approx(answer["prediction"], abs=1e-6)  # a label compares equal
        for label, probability in answer.get("probabilities", {}).items():
            assert row[f"probability:{label}"] == pytest.approx(probability, abs=1e-6)
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["artifacts"] == {
        "weights": {"path": "model.safetensors", "uri": "model.safetensors"},
        "spec": {"path": "spec.json", "uri": "spec.json"},
    }
    assert "python_model" not in flavor and not (folder / "artifacts").exists()
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert [path.name for path in files if path.suffix == ".safetensors"] == ["model.safetensors"]
    assert not [path for path in files if path.suffix in {".pkl", ".pickle", ".pt", ".pth"}]
    assert "torch==" in (folder / "requirements.txt").read_text()


def test_the_licence_is_the_first_line_of_the_license_file_at_the_root(tmp_path: Path) -> None:
    samples.write_synthetic(tmp_path / "cells", count_per_class=1, size=32)
    (tmp_path / "bare").mkdir()

    assert read_licence(str(tmp_path / "cells")) == samples.SYNTHETIC_LICENCE
    assert read_licence(str(tmp_path / "cells" / samples.MANIFEST)) == samples.SYNTHETIC_LICENCE
    assert read_licence(str(tmp_path / "bare")) == NOT_STATED
