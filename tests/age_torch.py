"""Test helper: the age CNN as a differentiable torch module (onnx2torch), checked against onnxruntime.

Moved out of metrics/age.py: only tests use it, and it is why onnx and onnx2torch were runtime
dependencies (now in the `dev` extra).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from metrics.age import ages_from_probs, normalize_chips
from metrics.backbones import resolve


def _register_pad_opset18() -> None:
    """onnx2torch 1.5 has Pad converters up to opset 13 only; opset 18 added an optional `axes`
    input that this graph does not use, so the opset-13 converter applies unchanged."""
    from onnx import defs
    from onnx2torch.node_converters.registry import (
        _CONVERTER_REGISTRY,
        OperationDescription,
        add_converter,
        get_converter,
    )

    if OperationDescription(defs.ONNX_DOMAIN, "Pad", 18) in _CONVERTER_REGISTRY:
        return
    pad13 = get_converter("Pad", 13)

    def pad18(node, graph):
        if len(node.input_values) > 3:
            raise NotImplementedError(f"Pad-18 node {node.name} uses `axes`, which the Pad-13 converter lacks")
        return pad13(node, graph)

    add_converter(operation_type="Pad", version=18)(pad18)


def torch_age_model(path: str | Path | None = None) -> nn.Module:
    """The age CNN as a frozen, eval-mode torch module (onnx2torch conversion of the ONNX graph).

    path: the ONNX file; default the verified `resolve("age_onnx")`.
    The module maps (N, 3, 64, 64) float32 normalised input (`normalize_chips`) to (N, 81)
    probabilities; its parameters do not require grad, but gradients flow to the input.
    """
    import onnx
    from onnx2torch import convert

    _register_pad_opset18()
    model = convert(onnx.load(str(path if path is not None else resolve("age_onnx"))))
    model.eval()
    model.requires_grad_(False)
    return model


def age_from_chips_torch(chips: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Differentiable age: chips (N, 3, 64, 64) float in [0, 255] RGB (aligned as `age_chips` does)
    -> (N,) ages in years, in the dtype of the model's output; gradients reach `chips`."""
    return ages_from_probs(model(normalize_chips(chips)))
