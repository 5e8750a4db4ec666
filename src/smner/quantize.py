"""Opt-in int8 inference on CPU: dynamic quantization of a model's linear layers.

The text encoder's ``nn.Linear`` weights (most of a prediction's time: about 70% for SMNER
with cached image features) are stored as int8 and its activations quantized on the fly;
smner's own layers, some of which read their weights directly (the span projection), and the
image backbone stay in float. Measured speed and F1 change are in docs/BENCHMARKS.md ("int8").
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
    """``model`` with its text encoder's linear layers dynamically quantized to ``mode`` (in
    place; eval mode). CPU only: PyTorch's quantized kernels do not run on GPUs."""
    if mode not in QUANTIZATIONS:
        raise SmnerError(f"quantize {mode!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if device.type != "cpu":
        raise SmnerError(f"quantize {mode}: int8 kernels run on the CPU only, not on {device}")
    from torch.ao.quantization import quantize_dynamic

    model.eval()
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it will move to torchao; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic(model.text, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
