"""``smner export``: a saved model folder that runs on ONNX Runtime.

The output folder is the input folder (config, weights, processor, card) plus one graph,
``model.onnx``, of the text encoder and every head, and ``onnx.json`` saying what it is (see
:mod:`smner.predict.onnx_backend`). The image encoder stays in PyTorch: image features (the
feature cache's, or the encoder's) are graph inputs.

The graph is traced with ``torch.export`` (the dynamo exporter; the TorchScript one bakes the
batch size into SMNER's attention mask) from the PyTorch model's own ``forward``, with batch,
sub-word, word and span axes dynamic. Two things of the model are stood in for while tracing,
each an identity at inference: the choice of visual input (the graph takes the features as
they are; the backend masks them as :meth:`NERModel.visual_features` does, before the graph)
and the image flags given to the information bottleneck, which only its training losses read.
A model with ``model.entity_competition`` runs its competitive pass after the graph, in
PyTorch (a decode picks each post's entities between the two passes, which a graph cannot
hold): the graph hands out what that pass reads (span vectors, visual tokens, the gate) and
the backend runs it as ``forward`` does. A model with ``model.span_pruning`` (or
``span_pruning=N``) gives a graph that prunes as it does: each post's N likeliest spans by
their text-side score go through the span-to-region block (the batch's span mask is computed
in the graph from the spans and the word mask).

Before anything is written the export checks itself: on a few posts, with and without images,
in batches of several sizes, the graph's outputs must match PyTorch's within a tolerance and
decode to the same entities, or it fails and leaves no output folder. With ``--quantize int8``
the checked float graph is quantised with ONNX Runtime's dynamic quantisation (every linear
layer of the text encoder; smner's own layers stay in float: :mod:`smner.predict.onnx_quantize`
says why), and how far it moves the outputs is recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smner.errors import SmnerError
from smner.extras import import_extra
from smner.fileio import atomic_write_text, make_staging_dir, replace_directory
from smner.model.base import ModelOutput, NERModel
from smner.model.span_pruning import set_span_pruning
from smner.predict.onnx_backend import (
    ATTENTION,
    BOX,
    EXPORTABLE_TYPES,
    GATE,
    GRAPH_FILE,
    IN_IMAGE,
    LOGITS,
    MANIFEST_FILE,
    ONNX_FORMAT_VERSION,
    ONNX_PURPOSE,
    SPAN_VECTORS,
    VISUAL_IGNORE,
    VISUAL_TOKENS,
    OnnxModel,
    competition_outputs,
    graph_inputs,
    graph_outputs,
    import_onnxruntime,
)
from smner.predict.onnx_quantize import quantize_graph, quiet_loggers
from smner.predict.onnx_verify import (
    CHECK_POSTS,
    DEFAULT_TOLERANCE,
    Verification,
    check_batches,
    session_model,
    verify,
    with_features,
)
from smner.processing.batching import Batch
from smner.processing.processor import Processor
from smner.saved.folder import CONFIG_FILE, WEIGHTS_CHECKSUM_KEY, file_sha256, read_config
from smner.version import __version__

#: largest difference allowed between the graph's and PyTorch's logits and attention weights


@dataclass
class ExportResult:
    output: Path
    manifest: dict[str, Any]
    #: the float graph against PyTorch (what decides whether the export is written)
    verification: Verification
    #: the int8 graph against PyTorch (recorded, not a gate), or None
    quantized: Verification | None = None


def export_onnx(
    model_dir: str | Path,
    output: str | Path,
    quantize: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    span_pruning: int | None = None,
) -> ExportResult:
    """Write ``output``: ``model_dir``'s folder plus its ONNX graph (float32, or int8 with
    ``quantize="int8"``), checked against PyTorch first; see the module. ``span_pruning``:
    the spans a post keeps for the span-to-region attention in the graph (None: the model's
    own ``model.span_pruning``; 0: every span)."""
    source, target = Path(model_dir), Path(output)
    if quantize not in (None, "int8"):
        raise SmnerError(f"quantize {quantize!r}: an ONNX graph is float32 or int8")
    if not math.isfinite(tolerance) or tolerance <= 0:
        raise SmnerError(f"tolerance {tolerance}: expected a number above 0")
    import_onnxruntime()
    import_extra("onnx", "onnx", ONNX_PURPOSE)
    import_extra("onnxscript", "onnx", ONNX_PURPOSE)
    _check_target(source, target)
    config, payload = read_config(source)
    if config.type not in EXPORTABLE_TYPES:
        raise SmnerError(
            f"{source}: a {config.type!r} model; smner export writes ONNX graphs of "
            f"{', '.join(EXPORTABLE_TYPES)} models only (this one runs on PyTorch)"
        )
    model = NERModel.from_pretrained(source).eval()
    if span_pruning is not None and span_pruning != getattr(model.config, "span_pruning", 0):
        set_span_pruning(model, span_pruning)  # the graph and its check against PyTorch
        payload["model"]["span_pruning"] = span_pruning
    processor = Processor.from_pretrained(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging_dir(target.parent, f".{target.name}.")
    try:
        _copy_folder(source, staging, skip=target)
        if span_pruning is not None:  # the folder says what its graph computes
            atomic_write_text(staging / CONFIG_FILE, _json(payload))
        graph = staging / GRAPH_FILE
        names = trace_graph(model, processor, graph, opset)
        checks = check_batches(model, processor)
        checked = session_model(model, graph)
        verification = verify(model, checked, checks, tolerance, exact=True)
        if not verification.passed:
            raise SmnerError(
                f"smner export: the ONNX graph does not match PyTorch on the check posts "
                f"({'; '.join(verification.problems[:3])}); nothing was written to {target}"
            )
        quantized = None
        if quantize == "int8":
            float_graph = staging / f"float-{GRAPH_FILE}"
            graph.replace(float_graph)
            quantize_graph(model, float_graph, graph)
            float_graph.unlink()
            checked = session_model(model, graph)
            quantized = verify(model, checked, checks, tolerance, exact=False)
            if quantized.problems:
                raise SmnerError(
                    f"smner export: the int8 graph gives unusable outputs "
                    f"({'; '.join(quantized.problems[:3])}); nothing was written to {target}"
                )
        manifest = _manifest(checked, graph, names, payload, quantize, verification, quantized)
        atomic_write_text(staging / MANIFEST_FILE, _json(manifest))
        replace_directory(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return ExportResult(target, manifest, verification, quantized)


def _check_target(source: Path, target: Path) -> None:
    """Refuse to write over the source, or over a folder that is not a model folder."""
    if not (source / CONFIG_FILE).is_file():
        raise SmnerError(f"{source}: not a saved smner model (no {CONFIG_FILE})")
    if target.resolve() in (source.resolve(), *source.resolve().parents):
        what = "is" if target.resolve() == source.resolve() else "holds"
        raise SmnerError(f"--output {target}: {what} the --model folder; choose another folder")
    if target.exists():
        if not target.is_dir():
            raise SmnerError(f"--output {target}: exists and is not a folder")
        if any(target.iterdir()) and not (target / CONFIG_FILE).is_file():
            raise SmnerError(
                f"--output {target}: a folder that is neither empty nor a model folder; "
                "choose a new one"
            )


def _copy_folder(source: Path, staging: Path, skip: Path) -> None:
    """The model folder's files, but an earlier export's graph and manifest, hidden files
    (the staging folder, when the output is inside the model folder) and the output."""
    for item in source.iterdir():
        if item.name in (GRAPH_FILE, MANIFEST_FILE) or item.name.startswith("."):
            continue
        if item.resolve() == skip.resolve():
            continue
        if item.is_dir():
            shutil.copytree(item, staging / item.name)
        else:
            shutil.copy2(item, staging / item.name)


# --- tracing -----------------------------------------------------------------------------------


class _TracedBatch(Batch):
    """A batch whose size is the traced size of its tensors, not a Python int: the model's
    ``batch.size`` (``expand(batch.size, -1)``) must follow the graph's batch axis."""

    @property
    def size(self) -> Any:  # type: ignore[override]
        return self.input_ids.shape[0]


class _NoImageFlags:
    """What the information bottleneck gets for its image flags while tracing: only its
    training losses read them (they are computed on posts with images), and their
    data-dependent branches cannot be traced."""

    def any(self) -> bool:
        return False

    def sum(self) -> int:
        return 0


class _TracedBottleneck(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, text: torch.Tensor, image: torch.Tensor, has_image: Any) -> Any:
        return self.inner(text, image, _NoImageFlags())


class GraphModule(nn.Module):
    """The traced function: the batch tensors named :func:`graph_inputs` in, the tensors
    ``decode`` reads out (:func:`graph_outputs`)."""

    def __init__(self, model: NERModel) -> None:
        super().__init__()
        self.model = model
        self.inputs = graph_inputs(model)
        self.outputs = graph_outputs(model)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        subword_word: torch.Tensor,
        word_mask: torch.Tensor,
        shape_ids: torch.Tensor,
        spans: torch.Tensor,
        has_image: torch.Tensor | None = None,
        image_pooled: torch.Tensor | None = None,
        image_regions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        batch = _TracedBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            word_index=word_index,
            subword_word=subword_word,
            word_mask=word_mask,
            shape_ids=shape_ids,
            spans=spans,
            span_mask=spans[None, :, 1] <= word_mask.sum(1)[:, None],  # as batch_spans has it
            has_image=has_image
            if has_image is not None
            else input_ids.new_zeros(input_ids.shape[0]).bool(),
            image_pooled=image_pooled,
            image_regions=image_regions,
        )
        output = self.model(batch)
        return _output_tensors(output, self.outputs)


def _output_tensors(output: ModelOutput, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    found: dict[str, torch.Tensor | None] = {LOGITS: output.logits, ATTENTION: output.attention}
    if output.grounding is not None:
        found[IN_IMAGE] = output.grounding.in_image_logit
        found[BOX] = output.grounding.box
    if output.competition is not None:
        state = output.competition
        found.update(
            {
                SPAN_VECTORS: state.spans,
                VISUAL_TOKENS: state.tokens,
                VISUAL_IGNORE: state.ignore,
                GATE: state.gate,
            }
        )
    missing = [n for n in names if found.get(n) is None]
    if missing:
        raise SmnerError(f"smner export: the model's forward gave no {', '.join(missing)}")
    return tuple(found[n] for n in names)  # type: ignore[misc]


@contextlib.contextmanager
def _traceable(model: NERModel) -> Iterator[None]:
    """The model with its two stand-ins (see the module) for the time of the trace."""
    grid = model.attention_grid or (
        model.image_encoder.output_grid() if model.image_encoder is not None else None
    )
    bottleneck = getattr(model, "bottleneck", None)
    model.visual_features = lambda batch: (batch.image_pooled, batch.image_regions, grid)  # type: ignore[method-assign]
    if bottleneck is not None:
        model.bottleneck = _TracedBottleneck(bottleneck)
    try:
        yield
    finally:
        del model.visual_features
        if bottleneck is not None:
            model.bottleneck = bottleneck


def trace_graph(
    model: NERModel, processor: Processor, path: Path, opset: int | None = None
) -> tuple[list[str], list[str]]:
    """Write ``model``'s graph (float32) to ``path``; its input and output names."""
    module = GraphModule(model).eval()
    batch = with_features(model, processor, list(CHECK_POSTS[:3]), [True, False, True])
    example = tuple(getattr(batch, name) for name in module.inputs)
    dynamic = _dynamic_shapes(module.inputs, processor.word_pieces.max_length)
    quiet = io.StringIO()
    with (
        _traceable(model),
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(quiet),
        quiet_loggers("torch", "onnxscript", "torch.onnx", "torch.export"),
    ):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                input_names=module.inputs,
                output_names=module.outputs,
                dynamic_shapes=dynamic,
                opset_version=opset,
                verbose=False,
            )
        except Exception as exc:  # torch.export raises many kinds, with pages of detail
            raise SmnerError(f"smner export: tracing the model failed ({_cause(exc)})") from None
        program.save(str(path))
    return list(module.inputs), list(module.outputs)


def _cause(exc: BaseException) -> str:
    """The first line that says what went wrong, from an exporter's pages of advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _dynamic_shapes(names: Sequence[str], max_subwords: int) -> tuple[dict[int, Any], ...]:
    from torch.export import Dim

    posts = Dim("posts", min=1, max=1 << 16)
    subwords = Dim("subwords", min=1, max=max(max_subwords, 2))
    words = Dim("words", min=1, max=1 << 16)
    spans = Dim("spans", min=1, max=1 << 20)
    axes: dict[str, dict[int, Any]] = {
        "input_ids": {0: posts, 1: subwords},
        "attention_mask": {0: posts, 1: subwords},
        "subword_word": {0: posts, 1: subwords},
        "word_index": {0: posts, 1: words},
        "word_mask": {0: posts, 1: words},
        "shape_ids": {0: posts, 1: words},
        "spans": {0: spans},
        "has_image": {0: posts},
        "image_pooled": {0: posts},
        "image_regions": {0: posts},
    }
    return tuple(axes[name] for name in names)


# --- quantisation ------------------------------------------------------------------------------


# --- checking ----------------------------------------------------------------------------------


def _manifest(
    model: OnnxModel,
    graph: Path,
    names: tuple[list[str], list[str]],
    payload: dict[str, Any],
    quantize: str | None,
    verification: Verification,
    quantized: Verification | None,
) -> dict[str, Any]:
    onnx = import_extra("onnx", "onnx", ONNX_PURPOSE)
    ort = import_onnxruntime()
    proto = onnx.load(str(graph), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "backend": "onnxruntime",
        # a graph that hands out the competitive pass's inputs needs a reader that runs it
        "format_version": ONNX_FORMAT_VERSION if competition_outputs(model.pytorch) else 1,
        "smner_version": __version__,
        "model_type": model.config.type,
        "graph": graph.name,
        "graph_sha256": file_sha256(graph),
        WEIGHTS_CHECKSUM_KEY: payload.get(WEIGHTS_CHECKSUM_KEY),
        "opset": opset,
        "quantization": quantize,
        "inputs": model.input_names,
        "outputs": model.output_names,
        "traced_inputs": names[0],
        "image_encoder": "pytorch" if model.image_encoder is not None else None,
        "exported_with": {
            "torch": torch.__version__,
            "onnx": getattr(onnx, "__version__", "unknown"),
            "onnxruntime": getattr(ort, "__version__", "unknown"),
        },
        "verification": verification.to_dict(),
        "int8_verification": quantized.to_dict() if quantized is not None else None,
    }


def _json(payload: dict[str, Any]) -> str:
    import json

    return json.dumps(payload, indent=2) + "\n"


def _round(value: float) -> float:
    return float(f"{value:.3g}")
