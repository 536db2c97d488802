"""Profiling aid for serving.py: what Ray Serve itself costs per request on this machine.

Deploys the lensops topology (FastAPI ingress -> preprocessor deployment -> batched model
deployment, same replica CPUs and request limits, one replica each, the same multipart
upload) with no work inside: the preprocessor
returns a constant uint8 array without decoding and the model answers a constant. The CPU
milliseconds per request by process are then the floor that any three-deployment Serve app pays
here, to hold against the lensops breakdown printed by serving.py.

    .venv/bin/python benchmarks/serve_floor.py --concurrency 4,16 --json serve_floor.json
"""

# No `from __future__ import annotations`: FastAPI reads the class-based ingress's route
# signatures at import time and needs real types (as in lensops.serving.api).
import argparse
import os
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from lensops.config import ServeConfig
from lensops.serving.app import INGRESS_HEADROOM, MODEL_BATCHES_ONGOING, PREPROCESSOR_MAX_ONGOING

from _common import Column, console, encoded_images, parser, print_table, start_ray, write_json
from _cpu import cpu_by_role, snapshot
from _load import run_load
from _serve_setup import free_port

floor_api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=PREPROCESSOR_MAX_ONGOING)
class Preprocessor:
    def __call__(self, data: bytes) -> np.ndarray:
        return np.zeros((3, 128, 128), np.uint8)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=MODEL_BATCHES_ONGOING * 16)
class Model:
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        return [{"prediction": "clean", "confidence": 1.0, "model": {"version": "1"}} for _ in images]


@serve.deployment(max_ongoing_requests=ServeConfig().ingress_max_inflight + INGRESS_HEADROOM)
@serve.ingress(floor_api)
class Ingress:
    def __init__(self, preprocessor: DeploymentHandle, model: DeploymentHandle):
        self.preprocessor, self.model = preprocessor, model

    @floor_api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        form = await request.form()
        prepared = await self.preprocessor.remote(await form["file"].read())
        return JSONResponse(await self.model.predict.remote(prepared))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    parsed.add_argument("--concurrency", default="4,16", help="comma-separated client counts")
    parsed.add_argument("--duration-s", type=float, default=15.0)
    parsed.add_argument("--warmup-s", type=float, default=3.0)
    parsed.add_argument("--source-size", type=int, default=300, help="side of the uploaded images (px)")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.concurrency, args.duration_s, args.warmup_s = "4", 2.0, 1.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    start_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Ingress.bind(Preprocessor.bind(), Model.bind()), name="floor", route_prefix="/")
    images = encoded_images(32, args.source_size)
    rows = []
    for level in (int(c) for c in args.concurrency.split(",")):
        before = snapshot()
        run = run_load(f"http://127.0.0.1:{port}", images, level, args.duration_s, args.warmup_s)
        spent = cpu_by_role(before, snapshot())
        answered = max(sum(s.ok for s in run.samples), 1)
        row = {"concurrency": level, **run.summary()}
        row |= {role: 1000 * seconds / answered for role, seconds in spent.items()}
        rows.append(row)
        console.print(f"floor c={level}: {row['img_per_s']:.1f} req/s, errors {row['errors']}")
    serve.shutdown()
    roles = sorted({role for row in rows for role in row if role.startswith(("Serve", "Ray", "load", "machine"))})
    columns = [Column("concurrency", "clients", "d"), Column("img_per_s", "req/s", ".1f", "lensops")]
    columns += [Column(role, f"{role}, CPU ms/req", ".1f") for role in roles]
    print_table("Ray Serve floor: the lensops topology with no work in it", columns, rows)
    write_json(args.json, "serve_floor", "cpu", {k: v for k, v in vars(args).items() if k != "json"}, rows)


if __name__ == "__main__":
    main()
