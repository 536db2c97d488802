"""The one forward path: uint8 images -> normalised tensors on the model's device -> network
-> the task's outputs -> answers.

Evaluation during training, offline evaluation, batch scoring and the service all run
through :class:`Forward`, so they cannot drift apart. Normalisation happens here, on the
model's device, so the stages before it only ever move uint8 pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lensops.model import backbones
from lensops.model.artifact import ModelSpec
from lensops.model.preprocess import normalizer

if TYPE_CHECKING:
    from lensops.model.onnx_forward import OnnxForward

Batch = Mapping[str, "torch.Tensor | np.ndarray"]
"""uint8 images per task input name, each (N, C, H, W); other keys (targets) are ignored."""


class Forward:
    def __init__(self, network: nn.Module, spec: ModelSpec, amp: bool = False):
        self.network = network
        self.task = spec.task
        self.device = next(network.parameters()).device
        self.normalize = normalizer(spec.preprocess)
        self.amp = amp and self.device.type == "cuda"
        self.memory_format = torch.channels_last if is_channels_last(network) else torch.contiguous_format

    def inputs(self, batch: Batch) -> list[torch.Tensor]:
        """The task's inputs of ``batch``, normalised on the network's device."""
        tensors = []
        for name in self.task.inputs:
            images = self.normalize(torch.as_tensor(batch[name]).to(self.device, non_blocking=True))
            tensors.append(images.contiguous(memory_format=self.memory_format))
        return tensors

    def logits(self, batch: Batch) -> torch.Tensor:
        """The network's raw output, in the network's current mode (training or eval)."""
        with torch.autocast(self.device.type, enabled=self.amp):
            return self.network(*self.inputs(batch))

    @torch.inference_mode()
    def outputs(self, batch: Batch) -> np.ndarray:
        """The task's activated outputs (probabilities, values, ...) on the CPU."""
        return self.task.activate(self.logits(batch).float()).cpu().numpy()

    @torch.inference_mode()
    def outputs_and_embeddings(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`outputs`, and each example's penultimate-layer features: what the task's head
        takes in (averaged over space for a convolutional head), the embedding that drift checks
        compare. ``ValueError`` for a network that was not built with a task head (``lensops_head``)."""
        captured: list[torch.Tensor] = []
        hook = head_of(self.network).register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            outputs = self.outputs(batch)
        finally:
            hook.remove()
        features = captured[0].mean((2, 3)) if captured[0].dim() == 4 else captured[0]
        return outputs, features.flatten(1).float().cpu().numpy()


def is_channels_last(network: nn.Module) -> bool:
    """Whether ``network``'s convolutions hold their weights channels-last (a 1x1 kernel is laid
    out the same either way, so only a wider one tells): its inputs are then given the same layout."""
    return any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in network.parameters()
    )


def has_head(network: nn.Module) -> bool:
    return hasattr(backbones.unwrap(network), "lensops_head")


def head_of(network: nn.Module) -> nn.Module:
    """:func:`lensops.model.backbones.head`, with ``ValueError`` for a network without one."""
    if not has_head(network):
        raise ValueError(f"{type(backbones.unwrap(network)).__name__} has no task head to take embeddings from")
    return backbones.head(network)


@dataclass(frozen=True)
class ModelInfo:
    """Which registered model answered: the ``model`` block of every answer."""

    name: str
    version: str
    run_id: str
    dataset_version: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Predictor:
    """A loaded model version that turns a batch of uint8 images into answers.

    With ``graph`` (the network exported to ONNX, :mod:`lensops.model.onnx_forward`) answers
    come from ONNX Runtime; :attr:`forward`, the torch path, stays for explanations."""

    def __init__(self, network: nn.Module, spec: ModelSpec, info: ModelInfo, graph: bytes | None = None):
        self.spec = spec
        self.info = info
        # channels-last is the layout oneDNN (CPU) and cuDNN (GPU) convolve fastest: 1.25-1.30x
        # for a Lite0 forward on one CPU thread (benchmarks/README.md), answers within 1e-5
        self.forward = Forward(network.eval().to(memory_format=torch.channels_last), spec)
        self.runner: Forward | OnnxForward = self.forward
        if graph is not None:
            # deferred: onnx_forward imports this module, and torch-only users never need it
            from lensops.model.onnx_forward import OnnxForward

            self.runner = OnnxForward(graph, self.forward)

    def predict(self, batch: Batch, embed: bool = False) -> list[dict[str, Any]]:
        """One answer per example of ``batch``, in order; with ``embed`` each also carries its
        ``embedding`` (a list of floats, see :meth:`Forward.outputs_and_embeddings`)."""
        if not embed:
            return self.spec.task.answers(self.runner.outputs(batch), self.spec.classes)
        outputs, embeddings = self.runner.outputs_and_embeddings(batch)
        answers = self.spec.task.answers(outputs, self.spec.classes)
        return [{**answer, "embedding": row.tolist()} for answer, row in zip(answers, embeddings, strict=True)]
