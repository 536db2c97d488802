"""Grad-CAM: where in the image the network looked when it scored a class.

The class score's gradient with respect to the last spatial feature map
(:func:`lensops.model.backbones.cam_layer`), averaged over the map, weighs the map's channels;
their weighted sum, without its negative part, is a coarse map of the evidence for that class
(Selvaraju et al., Grad-CAM, 2017). A transformer's tokens are laid back out on their patch grid
first. Each map is scaled to span 0..1 (its least to its most evidence); :func:`overlay` draws
it over the model's input image.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lensops.model import backbones
from lensops.model.artifact import ModelSpec
from lensops.model.forward import Batch, Forward


@dataclass(frozen=True)
class Explanation:
    target: int
    """The output index explained (a class index; 0 for a single output)."""
    cam: np.ndarray
    """(h, w) float32 in 0..1, at the feature map's resolution."""


def grad_cam(forward: Forward, batch: Batch, targets: list[int | None]) -> list[Explanation]:
    """One explanation per example of ``batch``: of ``targets[i]``, or (None) of its top output."""
    network, caller = forward.network, threading.get_ident()
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if threading.get_ident() == caller:  # a replica's other threads may run the network meanwhile
            captured.append(output)

    hook = backbones.cam_layer(network).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            inputs = [tensor.requires_grad_(True) for tensor in forward.inputs(batch)]
            logits = network(*inputs).float().reshape(len(targets), -1)
            chosen = [int(logits[i].argmax()) if t is None else t for i, t in enumerate(targets)]
            score = logits[torch.arange(len(chosen)), torch.tensor(chosen)].sum()
            (gradients,) = torch.autograd.grad(score, captured[-1])
    finally:
        hook.remove()
    maps = _weighted(_spatial(captured[-1].detach()), _spatial(gradients))
    return [Explanation(target, cam) for target, cam in zip(chosen, maps, strict=True)]


def _spatial(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) as is; a transformer's (B, tokens, C) as (B, C, s, s) on its patch grid,
    its leading class (and register) tokens dropped."""
    if features.dim() == 4:
        return features
    side = math.isqrt(features.shape[1])
    patches = features[:, features.shape[1] - side * side :]
    return patches.transpose(1, 2).reshape(features.shape[0], -1, side, side)


def _weighted(features: torch.Tensor, gradients: torch.Tensor) -> np.ndarray:
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * features).sum(dim=1)).float().flatten(1)
    low, high = cams.amin(dim=1, keepdim=True), cams.amax(dim=1, keepdim=True)
    scaled = (cams - low) / (high - low).clamp_min(1e-12)
    return scaled.reshape(features.shape[0], *features.shape[2:]).cpu().numpy()


def overlay(image: np.ndarray, cam: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: the (3, H, W) uint8 model input under the map, upsampled and coloured
    from blue (none) to red (most)."""
    side = image.shape[1:]
    upsampled = F.interpolate(torch.from_numpy(cam)[None, None], size=side, mode="bilinear", align_corners=False)
    heat = upsampled[0, 0].clamp(0, 1).numpy()
    colour = np.stack([np.clip(1.5 - np.abs(4 * heat - k), 0, 1) for k in (3, 2, 1)], axis=-1)
    blended = (1 - strength) * image.transpose(1, 2, 0) / 255 + strength * colour
    return (blended * 255).round().clip(0, 255).astype(np.uint8)


def target_index(spec: ModelSpec, target: str | None) -> int | None:
    """The output index of a class name (None: the top output); ``ValueError`` names the choices."""
    if target is None:
        return None
    if target in spec.classes:
        return spec.classes.index(target)
    if not spec.classes and target == "value":
        return 0
    choices = ", ".join(spec.classes) or "value"
    raise ValueError(f"unknown target '{target}': explain one of {choices}")


def described(explanation: Explanation, image: np.ndarray, spec: ModelSpec) -> dict[str, Any]:
    """An explanation as the service answers it: the class, the raw map and the overlay PNG."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, explanation.cam)).save(buffer, format="PNG")
    return {
        "target": spec.classes[explanation.target] if spec.classes else "value",
        "cam": explanation.cam.round(4).tolist(),
        "overlay_png": base64.b64encode(buffer.getvalue()).decode(),
    }
