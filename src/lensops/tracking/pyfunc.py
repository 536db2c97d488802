"""Every registered version is also an MLflow pyfunc model, so any MLflow user can load it.

The version's ``model/`` folder gets an ``MLmodel`` file, its environment files, a signature and
an input example beside ``model.safetensors`` and ``spec.json``. The model is
:mod:`lensops.tracking.pyfunc_model`, saved as code (nothing pickled) together with the lensops
package it imports, and its two artifacts are the version's own weights and spec: there is one
copy of the weights.

In: a frame with one column of encoded image bytes per task input (``image``). Out: one row per
row in, the task's answer as columns: ``prediction`` and, where the task has them,
``confidence`` and one ``probability:<class>`` column per class.
"""

from __future__ import annotations

import importlib.metadata
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model, infer_signature
from PIL import Image

from lensops.model.artifact import SPEC, WEIGHTS, ModelSpec
from lensops.model.forward import Forward
from lensops.model.preprocess import PreprocessSpec, to_uint8

CODE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE = Path(__file__).resolve().parents[1]
REQUIREMENTS = ("torch", "torchvision", "timm", "safetensors", "pillow", "numpy", "pandas", "pydantic", "pyyaml")
"""The distributions the model's code imports; pinned to the versions that trained it."""
ARTIFACTS = {"weights": WEIGHTS, "spec": SPEC}


def answer_frame(forward: Forward, spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The answers to a frame of encoded images, one row each, decoded as the service decodes."""
    decoded = {name: [to_uint8(bytes(data), spec.preprocess) for data in frame[name]] for name in spec.task.inputs}
    batch = {name: np.stack(images) for name, images in decoded.items()}
    answers = spec.task.answers(forward.outputs(batch), spec.classes)
    return pd.DataFrame([_columns(answer) for answer in answers])


def _columns(answer: dict[str, Any]) -> dict[str, Any]:
    row = {name: answer[name] for name in ("prediction", "confidence") if name in answer}
    return row | {f"probability:{label}": p for label, p in answer.get("probabilities", {}).items()}


def example_frame(spec: ModelSpec, image: np.ndarray) -> pd.DataFrame:
    """An input example: a (C, H, W) uint8 model input encoded as the model's uploads are, in
    every input column: a PNG, or for a model of raster bands a GeoTIFF whose values the band
    ranges map back onto ``image``."""
    data = _geotiff(image, spec.preprocess) if spec.preprocess.bands else _png(image)
    return pd.DataFrame({name: [data] for name in spec.task.inputs})


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(buffer, format="PNG")
    return buffer.getvalue()


def _geotiff(image: np.ndarray, preprocess: PreprocessSpec) -> bytes:
    """``image`` as band values (named by the spec's bands, in its order) of an ungeoreferenced GeoTIFF."""
    from affine import Affine

    from lensops.data import rasters

    low, high = (np.asarray(side, np.float32)[:, None, None] for side in zip(*preprocess.band_ranges, strict=True))
    values = low + image.astype(np.float32) / 255 * (high - low)
    names = tuple(None if band.isdigit() else band for band in preprocess.bands)
    return rasters.to_bytes(rasters.Raster(values, None, Affine.identity(), descriptions=names))


def write(directory: Path, forward: Forward, spec: ModelSpec, example: pd.DataFrame) -> None:
    """Make the version folder ``directory`` (weights and spec written) an MLflow pyfunc model."""
    signature = infer_signature(example, answer_frame(forward, spec, example))
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "pyfunc"
        mlflow.pyfunc.save_model(
            saved,
            python_model=str(CODE),
            artifacts={name: str(directory / file) for name, file in ARTIFACTS.items()},
            code_paths=[_package_copy(Path(tmp))],
            signature=signature,
            input_example=example,
            pip_requirements=requirements(spec),
        )
        shutil.rmtree(saved / "artifacts")  # the copies: point the flavor at the originals
        mlmodel = Model.load(saved)
        mlmodel.flavors["python_function"]["artifacts"] = {
            name: {"path": file, "uri": file} for name, file in ARTIFACTS.items()
        }
        mlmodel.save(saved / "MLmodel")
        for entry in saved.iterdir():
            shutil.move(entry, directory / entry.name)


def requirements(spec: ModelSpec) -> list[str]:
    """Pinned :data:`REQUIREMENTS`, and rasterio for a model that reads raster bands."""
    names = (*REQUIREMENTS, *(("rasterio",) if spec.preprocess.bands else ()))
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in names]


def _package_copy(tmp: Path) -> str:
    """The lensops package without compiled caches, for the model's ``code/`` folder."""
    copy = tmp / "code" / "lensops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(copy)
