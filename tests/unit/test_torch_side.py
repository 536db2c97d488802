"""The torch side of lensops runs where only PyTorch is: a bare GPU machine, a notebook."""

from __future__ import annotations

import subprocess
import sys

TORCH_SIDE = (
    "lensops.model.tasks",
    "lensops.model.backbones",
    "lensops.model.preprocess",
    "lensops.model.artifact",
    "lensops.model.forward",
    "lensops.model.siamese_unet",
    "lensops.model.masks",
    "lensops.model.change_baseline",
    "lensops.training.epoch",
)
HEAVY = ("ray", "mlflow", "sklearn", "matplotlib", "pandas", "fastapi", "scipy")


def test_the_model_and_epoch_modules_import_neither_ray_nor_mlflow_nor_plotting() -> None:
    report = f"print(sorted({{name.split('.')[0] for name in sys.modules}} & {set(HEAVY)}))"
    code = "; ".join(["import sys", *(f"import {name}" for name in TORCH_SIDE), report])

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)

    assert done.stdout.strip() == "[]"
