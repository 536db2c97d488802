"""The one module that talks to the MLflow Model Registry: versions, aliases, loading.

A version's source is the run's ``model/`` artifact folder: safetensors, spec.json, the
reference profile of its data (profile.safetensors) and, when registered for ONNX Runtime, its
graph (model.onnx). New versions get the alias ``challenger``; the alias ``champion`` marks
what is served.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from torch import nn

from lensops.config import Runtime
from lensops.model import artifact, onnx_forward
from lensops.model.artifact import ModelSpec
from lensops.model.forward import ModelInfo, Predictor
from lensops.monitoring.profile import PROFILE, Profile
from lensops.tracking import runs

logger = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version as lensops uses it (MLflow's own type numbers versions as int)."""

    name: str
    version: str
    run_id: str
    source: str

    @classmethod
    def of(cls, mlflow_version: ModelVersion) -> RegisteredVersion:
        return cls(
            name=mlflow_version.name,
            version=str(mlflow_version.version),
            run_id=mlflow_version.run_id,
            source=mlflow_version.source,
        )


@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    version: RegisteredVersion


def register(
    uri: str, name: str, run_id: str, source: str, tags: dict[str, str], description: str | None = None
) -> RegisteredVersion:
    """Create a new version of ``name`` from ``source`` (described by its model card) and point
    ``challenger`` at it."""
    mlflow_client = runs.client(uri)
    try:
        mlflow_client.create_registered_model(name, description="lensops image model")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    created = mlflow_client.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description)
    version = RegisteredVersion.of(created)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def find(uri: str, name: str, ref: str) -> RegisteredVersion | None:
    """A version by number (``"3"``) or alias (``"champion"``); None when there is none."""
    mlflow_client = runs.client(uri)
    try:
        if ref.isdigit():
            return RegisteredVersion.of(mlflow_client.get_model_version(name, ref))
        return RegisteredVersion.of(mlflow_client.get_model_version_by_alias(name, ref))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_alias(uri: str, name: str, alias: str, version: str) -> None:
    runs.client(uri).set_registered_model_alias(name, alias, version)


def load_spec(uri: str, version: RegisteredVersion) -> ModelSpec:
    """Only the spec of a version (no weights download)."""
    with tempfile.TemporaryDirectory(prefix="lensops-") as tmp:
        return artifact.load_spec(runs.download(uri, f"{version.source}/{artifact.SPEC}", Path(tmp)).parent)


def load_profile(uri: str, version: RegisteredVersion) -> Profile:
    """The reference profile registered with a version; ``LookupError`` for a version
    registered without one (before profiles existed, or by hand)."""
    with tempfile.TemporaryDirectory(prefix="lensops-") as tmp:
        try:
            path = runs.download(uri, f"{version.source}/{PROFILE}", Path(tmp))
        except (MlflowException, OSError) as exc:
            raise LookupError(f"{version.name} version {version.version} has no reference profile ({PROFILE})") from exc
        return Profile.load(path)


def require(uri: str, name: str, ref: str) -> RegisteredVersion:
    """:func:`find`, with a ``LookupError`` naming the model and reference when there is none."""
    version = find(uri, name, ref)
    if version is None:
        raise LookupError(f"registered model '{name}' has no version or alias '{ref}'")
    return version


def load(uri: str, name: str, ref: str, device: str = "cpu") -> LoadedModel:
    version = require(uri, name, ref)
    with tempfile.TemporaryDirectory(prefix="lensops-") as tmp:  # weights are read into memory
        # the two files it needs, not the folder (which also holds the profile and pyfunc files)
        for name in (artifact.SPEC, artifact.WEIGHTS):
            runs.download(uri, f"{version.source}/{name}", Path(tmp))
        model, spec = artifact.load(tmp, device)
    return LoadedModel(model=model, spec=spec, version=version)


def load_predictor(uri: str, name: str, ref: str, device: str = "cpu", runtime: Runtime = "torch") -> Predictor:
    """A registered version (number or alias) ready to answer, as the service and batch jobs
    use it; with ``runtime`` ``onnxruntime`` its answers come from ONNX Runtime."""
    loaded = load(uri, name, ref, device)
    info = ModelInfo(
        name=name,
        version=loaded.version.version,
        run_id=loaded.version.run_id,
        dataset_version=loaded.spec.dataset_version,
    )
    graph = onnx_graph(uri, loaded) if runtime == "onnxruntime" else None
    return Predictor(loaded.model, loaded.spec, info, graph)


def onnx_graph(uri: str, loaded: LoadedModel) -> bytes:
    """The version's ONNX graph: the one registered beside its weights, else exported now."""
    with tempfile.TemporaryDirectory(prefix="lensops-") as tmp:
        try:
            runs.download(uri, f"{loaded.version.source}/{onnx_forward.FILE}", Path(tmp))
        except (MlflowException, OSError):
            version = loaded.version
            logger.info("%s version %s has no ONNX graph registered: exporting it", version.name, version.version)
        return onnx_forward.read_or_export(tmp, loaded.model, loaded.spec)
