"""The ONNX Runtime backend: a saved folder whose text encoder and span heads run as one graph.

``smner export`` (:mod:`smner.predict.onnx_export`) writes such a folder: the model folder it
came from, unchanged (config, weights, processor, card), plus ``model.onnx`` and ``onnx.json``
(:data:`MANIFEST_FILE`: the backend, opset, quantisation, the graph's inputs and outputs and
SHA-256, and the export's own check against PyTorch). Every loader of a model folder goes
through :func:`load_model`, so a folder with a manifest runs on ONNX Runtime wherever a saved
model is used (the Predictor, ``smner predict/evaluate/serve``, the workers, Ray) and
:attr:`Predictor.backend <smner.predict.predictor.Predictor.backend>` says which one runs.

:class:`OnnxModel` has the interface the inference loop uses (``config``, ``image_encoder``,
``explains``, ``grounds``, ``attention_grid``, ``predict(batch)``): the image encoder stays in
PyTorch (its features, or the feature cache's, are graph inputs), the graph returns what the
PyTorch model's ``decode`` reads (span logits, the span-to-region attention, the grounding
outputs), and that same ``decode`` turns them into entities, so heatmaps, ``--explain``, boxes
and the page work as on PyTorch. ONNX Runtime runs on the CPU with ``torch.get_num_threads()``
intra-op threads (what the workers set per worker), whatever ``device`` the image encoder is on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smner.errors import SmnerError
from smner.extras import import_extra
from smner.model.base import CompetitionInputs, ModelOutput, NERModel
from smner.model.grounding import GroundingOutput
from smner.processing.batching import Batch
from smner.saved.folder import (
    CONFIG_FILE,
    SKIP_CHECKSUM_ENV,
    WEIGHTS_CHECKSUM_KEY,
    file_sha256,
    read_config,
)
from smner.version import __version__

#: what ``Predictor.backend`` says
BACKENDS = ("pytorch", "onnx")
MANIFEST_FILE = "onnx.json"
GRAPH_FILE = "model.onnx"
#: bumped when the manifest or the graph's interface changes incompatibly. 2: the graph may
#: hand the competitive pass's inputs out (:data:`COMPETITION_OUTPUTS`) for the backend to run
#: it; a graph without them is still written as 1, which older smner reads
ONNX_FORMAT_VERSION = 2
#: the model types that export to ONNX
EXPORTABLE_TYPES = ("smner",)
#: the graph's possible inputs, in order: the batch tensors the text side and the heads read
#: (``has_image``, ``image_pooled`` and ``image_regions`` only for a model that uses images)
GRAPH_INPUTS = (
    "input_ids",
    "attention_mask",
    "word_index",
    "subword_word",
    "word_mask",
    "shape_ids",
    "spans",
    "has_image",
    "image_pooled",
    "image_regions",
)
IMAGE_INPUTS = ("has_image", "image_pooled", "image_regions")
#: its outputs: span logits always; the span-to-region attention for a model that explains;
#: the grounding head's presence logit and box for a model that grounds
LOGITS, ATTENTION, IN_IMAGE, BOX = "logits", "attention", "in_image_logit", "box"
#: what a model with ``entity_competition`` hands out for its competitive pass, which runs in
#: PyTorch after the graph (a decode picks its members): the span vectors, the visual tokens
#: and their ignored keys, and the gated bottleneck's gate where the model has one
SPAN_VECTORS, VISUAL_TOKENS, VISUAL_IGNORE, GATE = "span_vectors", "visual_tokens", "ignore", "gate"
COMPETITION_OUTPUTS = (SPAN_VECTORS, VISUAL_TOKENS, VISUAL_IGNORE, GATE)
MAX_MANIFEST_BYTES = 2**20
ONNX_PURPOSE = "the ONNX Runtime backend (smner export, and folders it wrote)"


def graph_inputs(model: NERModel) -> list[str]:
    """The inputs of ``model``'s graph."""
    names = list(GRAPH_INPUTS)
    return names if model.config.use_image else [n for n in names if n not in IMAGE_INPUTS]


def graph_outputs(model: NERModel) -> list[str]:
    """The outputs of ``model``'s graph: what its ``decode`` reads, and what its competitive
    pass reads (:func:`competition_outputs`)."""
    return (
        [LOGITS]
        + ([ATTENTION] if model.explains else [])
        + ([IN_IMAGE, BOX] if model.grounds else [])
        + competition_outputs(model)
    )


def competition_outputs(model: NERModel) -> list[str]:
    """The graph outputs the competitive pass reads (none for a model without one)."""
    config = model.config
    if not (model.explains and getattr(config, "entity_competition", 0)):
        return []
    gated = getattr(config, "use_ib", False) and getattr(config, "ib_gate", False)
    return [SPAN_VECTORS, VISUAL_TOKENS, VISUAL_IGNORE] + ([GATE] if gated else [])


def import_onnxruntime() -> Any:
    """``onnxruntime``, or :class:`~smner.errors.MissingExtra` naming ``smner[onnx]``."""
    return import_extra("onnxruntime", "onnx", ONNX_PURPOSE)


def is_onnx_folder(directory: str | Path) -> bool:
    """Whether a saved folder was written by ``smner export`` (it has an ONNX manifest)."""
    return (Path(directory) / MANIFEST_FILE).exists()


def load_model(directory: str | Path, backend: str | None = None) -> NERModel:
    """The model of a saved folder, on the backend the folder says (``backend`` chooses
    ``"pytorch"`` or ``"onnx"`` instead: an exported folder keeps its PyTorch weights)."""
    if backend not in (None, *BACKENDS):
        raise SmnerError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    onnx = is_onnx_folder(directory)
    if backend == "onnx" and not onnx:
        raise SmnerError(
            f"{directory}: not an ONNX folder (no {MANIFEST_FILE}); write one with "
            f"'smner export --model {directory} --output OUT'"
        )
    if onnx and backend != "pytorch":
        return OnnxModel.from_pretrained(directory)
    return NERModel.from_pretrained(directory)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The checked ``onnx.json`` of an exported folder (one line of SmnerError if not)."""
    path = directory / MANIFEST_FILE
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise SmnerError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise SmnerError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not an ONNX manifest")
    try:
        payload = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SmnerError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or payload.get("backend") != "onnxruntime":
        raise SmnerError(f"{path}: not an smner ONNX manifest (no backend: onnxruntime)")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SmnerError(f"{path}: not an smner ONNX manifest (no format_version)")
    if version > ONNX_FORMAT_VERSION:
        raise SmnerError(
            f"{directory} was exported by smner {payload.get('smner_version', 'unknown')} in "
            f"ONNX format {version}; this smner ({__version__}) reads format "
            f"{ONNX_FORMAT_VERSION} and older: upgrade smner, or export the folder again"
        )
    for key in ("graph", "graph_sha256", WEIGHTS_CHECKSUM_KEY):
        if not isinstance(payload.get(key), str):
            raise SmnerError(f"{path}: not an smner ONNX manifest ({key} missing)")
    for key in ("inputs", "outputs"):
        value = payload.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SmnerError(f"{path}: not an smner ONNX manifest ({key} missing)")
    if payload.get("quantization") not in (None, "int8"):
        raise SmnerError(f"{path}: unknown quantization {payload.get('quantization')!r}")
    graph = payload["graph"]
    if Path(graph).name != graph or graph in ("", ".", ".."):
        raise SmnerError(f"{path}: graph {graph!r} must be a file name inside the folder")
    return payload


def session_options(ort: Any) -> Any:
    """ONNX Runtime's options: its intra-op threads follow ``torch.get_num_threads()`` (the
    workers set it per worker), one inter-op thread, every graph optimisation, no log lines."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def open_session(graph: Path) -> Any:
    """An ONNX Runtime session of ``graph`` on the CPU, or one line saying why not."""
    ort = import_onnxruntime()
    try:
        return ort.InferenceSession(
            str(graph), session_options(ort), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... for a broken file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SmnerError(f"{graph}: not a valid ONNX graph ({first[:300]})") from None


class OnnxModel(NERModel):
    """A saved model whose text encoder and heads run in ONNX Runtime (see the module).

    ``pytorch`` is the folder's PyTorch model without its text encoder: its image encoder
    feeds the graph and its ``decode`` reads the graph's outputs.
    """

    backend = "onnx"

    def __init__(
        self,
        pytorch: NERModel,
        session: Any,
        manifest: dict[str, Any],
        directory: Path | None = None,
    ) -> None:
        super().__init__(pytorch.config)
        self.pytorch = pytorch
        # Not a submodule attribute of nn.Module: the session is not a tensor holder.
        self.session = session
        self.manifest = manifest
        self.directory = directory
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        expected_in, expected_out = graph_inputs(pytorch), graph_outputs(pytorch)
        where = directory / manifest["graph"] if directory is not None else "the ONNX graph"
        unknown = [n for n in self.input_names if n not in expected_in]
        missing = [n for n in expected_out if n not in self.output_names]
        if unknown or missing or LOGITS not in self.output_names:
            raise SmnerError(
                f"{where}: its inputs {self.input_names} and outputs {self.output_names} are "
                f"not those of this model (inputs among {expected_in}, outputs {expected_out}); "
                "export the folder again"
            )
        if not pytorch.config.use_image and any(n in IMAGE_INPUTS for n in self.input_names):
            raise SmnerError(f"{where}: takes images, but the model is text-only")

    @property
    def quantization(self) -> str | None:
        return self.manifest.get("quantization")

    @property
    def explains(self) -> bool:
        return self.pytorch.explains

    @property
    def grounds(self) -> bool:
        return self.pytorch.grounds

    @property
    def image_encoder(self) -> Any:
        return self.pytorch.image_encoder

    @property
    def attention_grid(self) -> tuple[int, int] | None:
        return self.pytorch.attention_grid

    def visual_features(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int] | None]:
        return self.pytorch.visual_features(batch)

    def labels_of(self, batch: Batch) -> torch.Tensor | None:
        return self.pytorch.labels_of(batch)

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> ModelOutput:
        """The graph's outputs as the PyTorch model's :class:`ModelOutput` (no loss: an
        exported model predicts, it does not train)."""
        if labels is not None:
            raise SmnerError("an ONNX model predicts only; train the PyTorch model it came from")
        feed, grid = self.feed(batch)
        values = dict(zip(self.output_names, self.session.run(None, feed), strict=True))
        device = batch.input_ids.device

        def tensor(name: str) -> torch.Tensor | None:
            value = values.get(name)
            return None if value is None else torch.from_numpy(value).to(device)

        logits = tensor(LOGITS)
        assert logits is not None
        in_image, box = tensor(IN_IMAGE), tensor(BOX)
        grounding = (
            GroundingOutput(in_image_logit=in_image, box=box)
            if in_image is not None and box is not None
            else None
        )
        output = ModelOutput(
            logits=logits, attention=tensor(ATTENTION), grid=grid, grounding=grounding
        )
        spans, tokens, ignore = tensor(SPAN_VECTORS), tensor(VISUAL_TOKENS), tensor(VISUAL_IGNORE)
        if spans is None or tokens is None or ignore is None:
            return output
        output.competition = CompetitionInputs(spans, tokens, ignore, tensor(GATE))
        return self.pytorch.compete_after(batch, output)  # type: ignore[attr-defined]

    def feed(self, batch: Batch) -> tuple[dict[str, np.ndarray], tuple[int, int] | None]:
        """The graph's inputs from a batch, and the region grid. Image features come from the
        PyTorch side (cached features, or pixels through the image encoder), zero where a
        post has none; a batch without any image gets the zero regions of a full grid, so
        that one graph serves every batch."""
        values: dict[str, torch.Tensor] = {
            name: getattr(batch, name) for name in self.input_names if name not in IMAGE_INPUTS
        }
        grid = None
        if any(name in IMAGE_INPUTS for name in self.input_names):
            pooled, regions, grid = self.pytorch.visual_features(batch)
            if grid is None:
                grid = self.pytorch.image.output_grid()
                cells = grid[0] * grid[1]
                regions = regions.new_zeros(regions.size(0), cells, regions.size(-1))
            values.update(has_image=batch.has_image, image_pooled=pooled, image_regions=regions)
        feed = {}
        for name in self.input_names:
            value = values[name].detach()
            if value.is_floating_point() and value.dtype != torch.float32:
                value = value.float()
            feed[name] = np.ascontiguousarray(value.cpu().numpy())
        return feed, grid

    def decode(self, batch: Batch, output: ModelOutput) -> list[Any]:
        return self.pytorch.decode(batch, output)

    def save_pretrained(self, directory: str | Path, *args: Any, **kwargs: Any) -> None:
        raise SmnerError(
            f"{directory}: an ONNX model is not saved from memory; copy its folder "
            f"({self.directory}), or export the PyTorch folder again with 'smner export'"
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, directory: str | Path, device: str = "cpu", verify_weights: bool | None = None
    ) -> OnnxModel:
        """Load an exported folder, checking it first: the manifest, the graph's SHA-256
        (skipped with ``SMNER_SKIP_WEIGHTS_CHECKSUM=1``, as for the weights), that the graph
        was exported from the folder's own weights, and the graph itself."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        import_extra("onnxruntime", "onnx", f"{directory} (a folder written by smner export)")
        config, payload = read_config(directory)
        path = directory / MANIFEST_FILE
        if config.type not in EXPORTABLE_TYPES or manifest.get("model_type") != config.type:
            raise SmnerError(
                f"{path}: exported from a {manifest.get('model_type')!r} model, but "
                f"{CONFIG_FILE} describes a {config.type!r} one; export the folder again"
            )
        if manifest[WEIGHTS_CHECKSUM_KEY] != payload.get(WEIGHTS_CHECKSUM_KEY):
            raise SmnerError(
                f"{path}: the graph was exported from other weights than those {CONFIG_FILE} "
                "records; the folder's files do not belong together: export it again"
            )
        graph = directory / manifest["graph"]
        if not graph.is_file():
            raise SmnerError(f"{graph}: missing; an ONNX model folder holds its graph here")
        if verify_weights is None:
            verify_weights = os.environ.get(SKIP_CHECKSUM_ENV, "") in ("", "0")
        if verify_weights and file_sha256(graph) != manifest["graph_sha256"].lower():
            raise SmnerError(
                f"{graph}: does not match the SHA-256 recorded in {MANIFEST_FILE} (corrupted "
                f"or replaced); set {SKIP_CHECKSUM_ENV}=1 to load it anyway"
            )
        session = open_session(graph)
        pytorch = NERModel.from_pretrained(directory, device, verify_weights)
        pytorch.text = None  # the graph holds it; the image encoder and decode stay
        model = cls(pytorch, session, manifest, directory)
        names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if list(names) != [manifest["inputs"], manifest["outputs"]]:
            raise SmnerError(
                f"{graph}: its inputs and outputs are not those {MANIFEST_FILE} records; "
                "export the folder again"
            )
        return model.eval()
