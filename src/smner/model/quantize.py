"""Opt-in int8 inference on CPU: dynamic quantization of a model's linear layers.

The text encoder's attention and feed-forward up-projections (most of a prediction's time:
the encoder is about 70% of it for SMNER with cached image features) get int8 weights, one
scale per output channel, and their activations are quantized on the fly. Three kinds of layer
stay in float: the feed-forward down-projections (``*.output.dense`` outside attention, whose
inputs carry the GELU's outliers: in int8 they cost 1 F1 point on Twitter-2017 dev, the rest
0.4), smner's own layers (some read their weights directly, like the span projection), and
the image backbone. Measured speed and F1 change are in docs/BENCHMARKS.md ("int8").

``bf16`` keeps every weight and runs the prediction's forward under bfloat16 autocast: matrix
products in bfloat16, normalisations and softmaxes in float32. On CPUs with native bfloat16
(AVX-512 BF16 or AMX) it is the fastest PyTorch path at float32's F1; elsewhere it is
emulated and slower than float32, which loading says.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from smner.errors import SmnerError
from smner.model.base import NERModel

#: what ``--quantize`` accepts
Quantization = Literal["int8", "bf16"]
QUANTIZATIONS: tuple[str, ...] = ("int8", "bf16")


def quantize_model(model: NERModel, mode: str, device: torch.device) -> NERModel:
    """``model`` in eval mode, in place, for ``mode``: ``int8``, its text encoder's linear
    layers (but the feed-forward down-projections) dynamically quantized (CPU only: PyTorch's
    quantized kernels do not run on GPUs); ``bf16``, its predictions run under bfloat16
    autocast."""
    if mode not in QUANTIZATIONS:
        raise SmnerError(f"quantize {mode!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if mode == "bf16":
        if device.type == "cpu" and native_bfloat16() is False:
            warnings.warn(
                "quantize bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); "
                "bfloat16 is emulated and slower than float32 here",
                stacklevel=2,
            )
        model.eval()
        model.autocast_dtype = torch.bfloat16
        return model
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


def native_bfloat16() -> bool | None:
    """Whether this x86 CPU computes bfloat16 natively (Linux's CPU flags), None if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    names = set(flags.split(":", 1)[-1].split())
    return bool(names & {"avx512_bf16", "amx_bf16"})
