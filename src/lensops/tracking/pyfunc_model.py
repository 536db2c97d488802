"""A lensops version as an MLflow pyfunc model, defined in code (MLflow's models-from-code).

MLflow copies this file into every registered version and runs it when the version is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``): the network is rebuilt from the
version's own ``spec.json`` and ``model.safetensors``, so nothing is pickled. The frames in
and out are described in :mod:`lensops.tracking.pyfunc`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from lensops.model import artifact
from lensops.model.forward import Forward
from lensops.tracking.pyfunc import answer_frame


class ImageModel(PythonModel):
    """Encoded images in (one bytes column per task input), the task's answer columns out."""

    def load_context(self, context: PythonModelContext) -> None:
        network, self.spec = artifact.load(Path(context.artifacts["spec"]).parent)
        self.forward = Forward(network, self.spec)

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return answer_frame(self.forward, self.spec, model_input)


mlflow.models.set_model(ImageModel())
