"""The hand-rolled baseline server: one uvicorn process, FastAPI, torch, one model call per request.

It serves a saved lensops model directory with the same preprocessing and answer as the Ray
Serve application (:func:`lensops.serving.uploads.prepare`, :class:`lensops.model.forward.Predictor`,
on the same ``--runtime``: torch eager or ONNX Runtime), the
way a plain FastAPI/Flask server does it: the ``async`` route decodes the upload and runs the
forward pass of that one image inline, so requests are served one at a time with every torch
thread on each. Run as ``python benchmarks/_fastapi_baseline.py MODEL_DIR --port P``.
"""

from __future__ import annotations

import argparse
from typing import get_args

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, UploadFile
from fastapi.responses import JSONResponse

from lensops.config import Runtime, ServeConfig
from lensops.model import artifact, onnx_forward
from lensops.model.forward import ModelInfo, Predictor
from lensops.serving.errors import ApiError
from lensops.serving.uploads import InputLimits, prepare


def create_app(model_dir: str, device: str, runtime: str) -> FastAPI:
    model, spec = artifact.load(model_dir, device)
    info = ModelInfo(name="baseline", version="1", run_id="", dataset_version=spec.dataset_version)
    graph = onnx_forward.read_or_export(model_dir, model, spec) if runtime == "onnxruntime" else None
    predictor = Predictor(model, spec, info, graph)
    limits = InputLimits.from_config(ServeConfig())
    app = FastAPI(title="plain FastAPI + torch baseline")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(file: UploadFile) -> JSONResponse:
        try:
            image = prepare(await file.read(), spec.preprocess, limits)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        (answer,) = predictor.predict({"image": np.expand_dims(image, 0)})
        return JSONResponse({**answer, "model": info.as_dict()})

    return app


def main() -> None:
    parsed = argparse.ArgumentParser(description=__doc__)
    parsed.add_argument("model_dir")
    parsed.add_argument("--port", type=int, required=True)
    parsed.add_argument("--threads", type=int, required=True, help="torch threads")
    parsed.add_argument("--device", default="cpu")
    parsed.add_argument("--runtime", choices=get_args(Runtime), default="torch")
    args = parsed.parse_args()
    torch.set_num_threads(args.threads)
    app = create_app(args.model_dir, args.device, args.runtime)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
