"""Grad-CAM on a model that learned where to look: on images whose class is decided by one
marked quadrant (a checkerboard: ``marked``, flat grey: ``plain``; which quadrant, random) in random texture, a
small network trained for a few seconds peaks on that square and puts about half of its map there."""

from __future__ import annotations

import numpy as np
import torch
from factories import model_spec

from lensops.model.explain import grad_cam, overlay
from lensops.model.forward import Forward

SIDE, CELL = 128, 64
CLASSES = ["marked", "plain"]
CHECKS = np.where((np.indices((CELL, CELL)) // 4).sum(0) % 2 == 0, 250, 5).astype(np.uint8)
"""A high-contrast checkerboard: the mark. Its mean is the texture's, so no global statistic tells it."""


def squares(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 3, SIDE, SIDE) uint8, labels, masks of the square (N, SIDE, SIDE) bool)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 196, (count, 3, SIDE, SIDE), dtype=np.uint8)
    labels = rng.integers(0, 2, count)
    masks = np.zeros((count, SIDE, SIDE), bool)
    for i, (row, col) in enumerate(rng.integers(0, SIDE // CELL, (count, 2))):
        rows, cols = slice(row * CELL, (row + 1) * CELL), slice(col * CELL, (col + 1) * CELL)
        images[i, :, rows, cols] = CHECKS if labels[i] == 0 else 128
        masks[i, rows, cols] = True
    return images, labels, masks


def trained(forward: Forward, images: np.ndarray, labels: np.ndarray, epochs: int = 6) -> None:
    for module in forward.network.modules():  # MobileNetV3's 0.01 would leave eval statistics far behind
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    optimizer = torch.optim.AdamW(forward.network.parameters(), lr=2e-3)
    forward.network.train()
    for _ in range(epochs):
        for start in range(0, len(images), 32):
            (inputs,) = forward.inputs({"image": images[start : start + 32]})
            targets = torch.as_tensor(labels[start : start + 32])
            loss = torch.nn.functional.cross_entropy(forward.network(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    forward.network.eval()


def test_the_explanation_of_a_trained_model_sits_on_the_region_that_decides_the_class() -> None:
    torch.manual_seed(0)
    spec = model_spec("classification", CLASSES, architecture="mobilenet_v3_small")
    spec = spec.model_copy(update={"preprocess": spec.preprocess.model_copy(update={"image_size": SIDE})})
    forward = Forward(spec.build_network(load_weights=False), spec)
    trained(forward, *squares(384, seed=1)[:2])
    images, labels, masks = squares(64, seed=2)
    marked = labels == 0

    explained = grad_cam(forward, {"image": images[marked]}, [0] * int(marked.sum()))

    accuracy = (forward.outputs({"image": images}).argmax(1) == labels).mean()
    assert accuracy > 0.9, accuracy
    shares, peaks = [], []
    for explanation, mask in zip(explained, masks[marked], strict=True):
        cells = explanation.cam.shape[0]  # 4 x 4 here: each cell a 32 px patch
        inside = mask.reshape(cells, SIDE // cells, cells, SIDE // cells).mean(axis=(1, 3)) > 0.5
        shares.append(explanation.cam[inside].sum() / explanation.cam.sum())
        peaks.append(inside.flat[explanation.cam.argmax()])
    # the marked quadrant is a quarter of the image: a map blind to it would put 25% of its mass
    # there and peak there one time in four (measured: a median of 53% of the mass, every peak)
    assert np.median(shares) > 0.45, shares
    assert np.mean(peaks) >= 0.9, peaks
    assert overlay(images[0], explained[0].cam).shape == (SIDE, SIDE, 3)
