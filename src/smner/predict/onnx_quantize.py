"""int8 for an exported graph: ONNX Runtime's dynamic quantisation of the text encoder's
linear layers, found by the module path each node was exported from.

Unlike PyTorch's int8 (:func:`smner.model.quantize.int8_layers`), the feed-forward
down-projections are quantised too: in ONNX Runtime's int8 they cost no measurable F1 (-0.13
with them against -0.12 without on Twitter-2017 dev, none on the generated corpus) and
predict 15% faster. smner's own span layers stay in float: their matrix products are small,
and quantising their inputs on the fly cost more than it saved (docs/BENCHMARKS.md, "ONNX
Runtime")."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from smner.errors import SmnerError
from smner.extras import import_extra
from smner.model.base import NERModel
from smner.predict.onnx_backend import (
    ONNX_PURPOSE,
    import_onnxruntime,
)

#: largest difference allowed between the graph's and PyTorch's logits and attention weights


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def int8_nodes(model: NERModel, graph: Any) -> list[str]:
    """The graph's matrix products that belong to the text encoder's linear layers, found by
    the module path the exporter records on each node."""
    wanted = {
        f"model.text.{name}"
        for name, module in model.text.named_modules()
        if isinstance(module, nn.Linear)
    }
    chosen = []
    for node in graph.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        scopes = next(
            (p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None
        )
        if scopes is None:
            continue
        try:
            path = eval_list(scopes)
        except ValueError:
            continue
        # the innermost module (the last entry names the operation)
        if len(path) >= 2 and path[-2] in wanted:
            chosen.append(node.name)
    return chosen


def eval_list(text: str) -> list[str]:
    """A list of strings as the exporter writes it (``['', 'model', 'model.text']``)."""
    import ast

    value = ast.literal_eval(text)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(text)
    return list(value)


def quantize_graph(model: NERModel, source: Path, target: Path) -> list[str]:
    """``source`` with the nodes of :func:`int8_nodes` dynamically quantised to int8 (one
    scale per output channel, as PyTorch's int8), written to ``target``."""
    onnx = import_extra("onnx", "onnx", ONNX_PURPOSE)
    import_onnxruntime()
    nodes = int8_nodes(model, onnx.load(str(source)))
    if not nodes:
        raise SmnerError("smner export: found no text-encoder layer to quantise in the graph")
    quantize_int8(source, target, nodes)
    return nodes


def quantize_int8(source: Path, target: Path, nodes: list[str] | None = None) -> None:
    """ONNX Runtime's dynamic int8 of ``nodes`` (every matrix product when None), one scale per
    output channel, quietly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings(), quiet_loggers("root", "onnxruntime"):
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_quantize=nodes,
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
