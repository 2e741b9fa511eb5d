"""One way to write an ONNX file from a torch module, shared by every exporter in ailand
(the emulator step, the DL multi-model ensemble, the dust emission network)."""

from __future__ import annotations

import json
import logging
import warnings
from typing import Mapping, Sequence

import torch


def export_onnx(module: torch.nn.Module, args: tuple, *, input_names: Sequence[str], output_names: Sequence[str],
                dynamic_shapes: Mapping, opset: int, metadata: Mapping[str, str]):
    """``torch.onnx.export`` (dynamo, optimised) of ``module`` on example ``args``, without
    the exporter's own warnings and log lines ("torchvision is not installed" ...) on the
    default path; the ``metadata`` (JSON strings) go into ``metadata_props``, its
    ``"description"`` (a JSON string) into the doc string. Returns the ``onnx.ModelProto``."""
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, tuple(args), dynamo=True, input_names=list(input_names),
                                        output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                                        opset_version=int(opset), optimize=True, verbose=False)
    finally:
        noisy.setLevel(level)
    proto = program.model_proto
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "ailand"
    if "description" in metadata:
        proto.doc_string = json.loads(metadata["description"])
    return proto
