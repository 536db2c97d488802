"""The decode side of lensops loads neither torch nor MLflow: Ray Data's decode tasks, batch
scoring's read-and-check tasks and the Serve preprocessor's replicas start without them."""

from __future__ import annotations

import subprocess
import sys

DECODE_SIDE = (
    "lensops.data.loading",
    "lensops.data.validation",
    "lensops.scoring.checking",
    "lensops.serving.uploads",
    "lensops.serving.preprocessor",
)
HEAVY = ("torch", "torchvision", "timm", "mlflow", "onnxruntime")
DECODE = """
import io
import numpy as np
from PIL import Image
from lensops.model.preprocess import PreprocessSpec, mask_to_uint8, to_uint8
buffer = io.BytesIO()
Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(buffer, format="PNG")
spec = PreprocessSpec(image_size=32, resize_size=36, mean=(0.5,) * 3, std=(0.5,) * 3)
assert to_uint8(buffer.getvalue(), spec).shape == (3, 32, 32)
assert mask_to_uint8(buffer.getvalue(), spec).shape == (32, 32)
"""


def test_the_decode_modules_and_a_decode_import_neither_torch_nor_mlflow() -> None:
    report = f"print(sorted({{name.split('.')[0] for name in sys.modules}} & {set(HEAVY)}))"
    code = "\n".join(["import sys", *(f"import {name}" for name in DECODE_SIDE), DECODE, report])

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
