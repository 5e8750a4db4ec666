"""Opt-in int8 inference on CPU: dynamic quantization of a model's linear layers.

The text encoder's attention and feed-forward up-projections (most of a prediction's time:
the encoder is about 70% of it for SMNER with cached image features) get int8 weights, one
scale per output channel, and their activations are quantized on the fly. Three kinds of layer
stay in float: the feed-forward down-projections (``*.output.dense`` outside attention, whose
inputs carry the GELU's outliers: in int8 they cost 1 F1 point on Twitter-2017 dev, the rest
0.4), smner's own layers (some read their weights directly, like the span projection), and
the image backbone. Measured speed and F1 change are in docs/BENCHMARKS.md ("int8").
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from smner.errors import SmnerError
from smner.model.base import NERModel

#: what ``--quantize`` accepts
Quantization = Literal["int8"]
QUANTIZATIONS: tuple[str, ...] = ("int8",)


def quantize_model(model: NERModel, mode: str, device: torch.device) -> NERModel:
    """``model`` with its text encoder's linear layers (but the feed-forward down-projections)
    dynamically quantized to ``mode``, in place, in eval mode. CPU only: PyTorch's quantized
    kernels do not run on GPUs."""
    if mode not in QUANTIZATIONS:
        raise SmnerError(f"quantize {mode!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if device.type != "cpu":
        raise SmnerError(f"quantize {mode}: int8 kernels run on the CPU only, not on {device}")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model.eval()
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it will move to torchao; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # One scale per output channel: per-tensor scales cost 1.7 F1 on Twitter-2017 dev.
        spec = {name: per_channel_dynamic_qconfig for name in int8_layers(model.text)}
        quantize_dynamic(model.text, spec, dtype=torch.qint8, inplace=True)
    return model


def int8_layers(encoder: nn.Module) -> list[str]:
    """Names of the linear layers :func:`quantize_model` puts in int8: all but the
    feed-forward down-projections (``output.dense`` outside attention, in BERT, RoBERTa and
    MPNet naming)."""
    return [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
        and not (name.endswith("output.dense") and "attention" not in name)
    ]
