"""Serving set-up shared by ``serving.py`` and ``hot_swap.py``: an untrained model registered in a
temporary MLflow store, the lensops Ray Serve application on a local Ray, and the plain FastAPI
baseline server in a subprocess.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lensops.config import LensopsConfig, ModelConfig, PreprocessConfig
from lensops.model import artifact, onnx_forward
from lensops.model.artifact import ModelSpec
from lensops.model.backbones import pretrained_normalization
from lensops.model.preprocess import PreprocessSpec
from lensops.runtime import free_port
from lensops.tracking import registry, runs
from lensops.waiting import http_ok, wait_until

from _common import add_model_flags, start_ray

MODEL_NAME = "benchmark-model"
RELOAD_TOKEN = "benchmark-reload-token"
CLASSES = ["clean", "dusty"]
HERE = Path(__file__).resolve().parent


def add_model_args(parsed: argparse.ArgumentParser) -> None:
    add_model_flags(parsed)
    parsed.add_argument("--source-size", type=int, default=300, help="side of the uploaded images (px)")
    parsed.add_argument("--max-batch-size", type=int, default=16, help="serve.max_batch_size (and the raw batch)")
    parsed.add_argument("--batch-wait-s", type=float, default=0.01, help="serve.batch_wait_timeout_s")
    parsed.add_argument("--max-replicas", type=int, default=2, help="serve.max_replicas (autoscaling)")


def model_spec(arch: str, weights: str, image_size: int) -> ModelSpec:
    model_cfg = ModelConfig(architecture=arch, weights=weights)
    mean, std = pretrained_normalization(model_cfg)
    return ModelSpec(
        model=model_cfg,
        classes=CLASSES,
        preprocess=PreprocessSpec.resolve(PreprocessConfig(image_size=image_size), mean, std),
        dataset_version="ds-benchmark",
        data_source="synthetic",
        config=LensopsConfig().model_dump(mode="json"),
        git_commit=runs.git_commit(),
    )


def make_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The backbone with its pretrained weights (if any) and a freshly initialised head."""
    torch.manual_seed(seed)
    return spec.build_network().eval()


@dataclass(frozen=True)
class Registered:
    uri: str
    model_dir: Path
    versions: list[str]


def register_versions(work: Path, spec: ModelSpec, count: int, runtime: str = "torch") -> Registered:
    """Save ``count`` differently-seeded models and register them in a sqlite MLflow store under
    ``work``; ``champion`` points at the first. ``model_dir`` holds the first model's artifact.
    For ``onnxruntime`` each version carries its ONNX graph, as training registers one whose
    config says ``serve.runtime: onnxruntime``."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    versions, first_dir = [], work / "model-1"
    for index in range(count):
        model = make_model(spec, seed=index)
        directory = artifact.save(work / f"model-{index + 1}", model, spec)
        if runtime == "onnxruntime":
            onnx_forward.write(directory, model, spec)
        run_id = runs.create_run(uri, "benchmarks", f"benchmark-model-{index + 1}", {})
        source = runs.log_directory(uri, run_id, directory, "model")
        versions.append(registry.register(uri, MODEL_NAME, run_id, source, {}).version)
    registry.set_alias(uri, MODEL_NAME, registry.CHAMPION, versions[0])
    return Registered(uri=uri, model_dir=first_dir, versions=versions)


def service_config(uri: str, args: argparse.Namespace) -> LensopsConfig:
    cfg = LensopsConfig()
    cfg.tracking.tracking_uri = uri
    cfg.tracking.registered_model = MODEL_NAME
    cfg.serve.device = args.device
    cfg.serve.runtime = args.runtime
    cfg.serve.watch_interval_s = 0  # swaps only through POST /reload-model
    cfg.serve.max_batch_size = args.max_batch_size
    cfg.serve.batch_wait_timeout_s = args.batch_wait_s
    cfg.serve.max_replicas = args.max_replicas
    return cfg


@contextmanager
def serve_app(cfg: LensopsConfig) -> Iterator[str]:
    """The lensops Serve application on a local Ray (lensops.runtime.init_ray); yields its URL."""
    # Replica logs still go to their files; this only keeps them off this process's console,
    # which also runs the load generator.
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    import ray
    from ray import serve

    from lensops.serving.app import run_local

    start_ray()
    try:
        yield run_local(cfg, port=free_port(), ingress_env={cfg.serve.reload_token_env: RELOAD_TOKEN})
    finally:
        serve.shutdown()
        ray.shutdown()


@contextmanager
def fastapi_server(
    model_dir: Path, threads: int, device: str, runtime: str = "torch", timeout_s: float = 120
) -> Iterator[str]:
    """The plain FastAPI baseline (``_fastapi_baseline.py``) in a subprocess."""
    port = free_port()
    command = [sys.executable, str(HERE / "_fastapi_baseline.py"), str(model_dir), "--port", str(port)]
    process = subprocess.Popen([*command, "--threads", str(threads), "--device", device, "--runtime", runtime])
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout_s)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"baseline server exited with {process.returncode}")
        return http_ok(f"{url}/health", timeout_s=5)

    wait_until(up, timeout_s, "a healthy baseline server", interval_s=0.2)


def replica_counts(app: str = "lensops") -> dict[str, int]:
    """Running replicas per deployment of the Serve application (autoscaling moves them)."""
    from ray import serve

    deployments = serve.status().applications[app].deployments
    return {name: int(status.replica_states.get("RUNNING", 0)) for name, status in deployments.items()}
