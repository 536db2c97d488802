"""The forward path on ONNX Runtime (``serve.runtime: onnxruntime``): the same normalised inputs
and the same task activation as :class:`lensops.model.forward.Forward`, the network in between
exported to ONNX.

The export uses torch's current exporter (``torch.onnx.export(..., dynamo=True)``) with a
dynamic batch dimension. For a network with a task head the graph has one output, the head's
output with the head's input (the embedding the prediction log keeps) appended along the
feature axis; the width of the head's output is stored in the graph's metadata, so a graph read
back from a file splits it the same way. A version registered with ``serve.runtime:
onnxruntime`` carries its graph beside the weights (:data:`FILE`); one registered without it is
exported when loaded. Explanations need gradients: they stay on the torch network.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lensops.model import backbones
from lensops.model.artifact import ModelSpec
from lensops.model.forward import Batch, Forward, has_head

FILE = "model.onnx"
WIDTH_KEY = "lensops.head_outputs"
"""Graph metadata: how many leading features of the output are the head's output."""
EXAMPLE_BATCH = 2
"""Batch of the example inputs the export traces (not 1: torch.export would fix a batch of 1)."""


class _WithHeadInput(nn.Module):
    """A head that also hands on what it was given: ``[head(x), x]`` along the feature axis."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.head(features), features.flatten(1)], dim=1)


def export(network: nn.Module, spec: ModelSpec) -> bytes:
    """``network`` (a copy, on the CPU, in eval mode) as a serialised ONNX graph."""
    plain = copy.deepcopy(backbones.unwrap(network)).cpu().eval()
    example = _example(plain, spec)
    with torch.inference_mode():
        width = plain(*example).shape[1]
    if has_head(plain):
        parent, _, name = plain.lensops_head.rpartition(".")
        owner = plain.get_submodule(parent) if parent else plain
        setattr(owner, name, _WithHeadInput(getattr(owner, name)))
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        plain,
        tuple(example),
        dynamo=True,
        input_names=list(spec.task.inputs),
        output_names=["outputs"],
        dynamic_shapes=tuple({0: batch} for _ in example),
        verbose=False,
    )
    graph = program.model_proto
    entry = graph.metadata_props.add()
    entry.key, entry.value = WIDTH_KEY, str(width)
    return graph.SerializeToString()


def _example(network: nn.Module, spec: ModelSpec) -> list[torch.Tensor]:
    size, channels = spec.preprocess.image_size, len(spec.preprocess.mean)
    zeros = np.zeros((EXAMPLE_BATCH, channels, size, size), dtype=np.uint8)
    with torch.inference_mode():
        return [t.clone() for t in Forward(network, spec).inputs(dict.fromkeys(spec.task.inputs, zeros))]


def write(directory: str | Path, network: nn.Module, spec: ModelSpec) -> Path:
    """Export ``network`` into ``directory``/:data:`FILE` (beside the weights of a version)."""
    path = Path(directory) / FILE
    path.write_bytes(export(network, spec))
    return path


def read_or_export(directory: str | Path, network: nn.Module, spec: ModelSpec) -> bytes:
    """The graph a version folder keeps beside its weights, else ``network`` exported now."""
    path = Path(directory) / FILE
    return path.read_bytes() if path.is_file() else export(network, spec)


class OnnxForward:
    """:meth:`outputs` and :meth:`outputs_and_embeddings` of :class:`Forward`, with the network
    run by an ONNX Runtime session on the CPU, on as many threads as torch has here."""

    def __init__(self, graph: bytes, forward: Forward):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.width = int(self.session.get_modelmeta().custom_metadata_map[WIDTH_KEY])
        self.forward = forward

    def _run(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's outputs and (empty for a network without a head) its inputs."""
        with torch.inference_mode():
            tensors = self.forward.inputs(batch)
        feeds = {name: tensor.cpu().numpy() for name, tensor in zip(self.forward.task.inputs, tensors, strict=True)}
        (out,) = self.session.run(None, feeds)
        joined = torch.from_numpy(out)
        return joined[:, : self.width], joined[:, self.width :]

    def _activated(self, logits: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.forward.task.activate(logits.float()).numpy()

    def outputs(self, batch: Batch) -> np.ndarray:
        return self._activated(self._run(batch)[0])

    def outputs_and_embeddings(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self._run(batch)
        if embeddings.shape[1] == 0:
            raise ValueError("this network has no task head to take embeddings from")
        return self._activated(logits), embeddings.numpy()
