"""Evaluating a saved model on a data file: its entity scores and, where boxes are given,
where its attention looks and how well it grounds. The predictions come from the one loop in
:mod:`smner.predict.loop`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from smner.data.conll import Corpus
from smner.data.images import ImageStore
from smner.data.mnermi import read_corpus
from smner.data.types import Example
from smner.encoders.preprocessing import ImagePreprocessing
from smner.errors import SmnerError
from smner.evaluation.grounding import GroundingScores, score_grounding, write_box_files
from smner.evaluation.metrics import EntityScorer, Scores
from smner.evaluation.pointing import AlignmentScores, load_entity_boxes, score_alignment
from smner.model.base import PredictedEntity
from smner.model.quantize import Quantization, quantize_model
from smner.model.span_pruning import set_span_pruning
from smner.predict.image_input import ImageProvider
from smner.predict.loop import predict_examples
from smner.predict.onnx_backend import OnnxModel, load_model
from smner.processing.processor import Processor


def entity_scorer(
    examples: Sequence[Example], predictions: Sequence[Sequence[PredictedEntity]]
) -> EntityScorer:
    scorer = EntityScorer()
    for ex, post in zip(examples, predictions, strict=True):
        scorer.update(ex.entities, [p.entity for p in post])
    return scorer


def score_predictions(
    examples: Sequence[Example], predictions: Sequence[Sequence[PredictedEntity]]
) -> Scores:
    return entity_scorer(examples, predictions).result()


@dataclass
class Evaluation:
    """A saved model's predictions on a data file, and their scores."""

    corpus: Corpus
    predictions: list[list[PredictedEntity]]
    scores: Scores
    #: what happened to the images ("N loaded, M missing"), or None for a text-only model
    image_summary: str | None
    #: how the model cropped and resized images (None for a text-only model)
    preprocessing: ImagePreprocessing | None = None
    image_dir: Path | None = None
    #: whether the model says where each entity is (a grounding head)
    grounds: bool = False

    def alignment(self, boxes_file: str | Path) -> AlignmentScores:
        """How well the attention points at each entity's box (see
        :mod:`smner.evaluation.pointing`)."""
        return score_alignment(
            self.corpus.examples,
            self.predictions,
            load_entity_boxes(boxes_file, self.corpus.examples),
            ImageStore(self.image_dir),
            self.preprocessing,
        )

    def write_boxes(self, folder: str | Path) -> int:
        """The predicted boxes as VOC files in ``folder`` (see
        :func:`smner.evaluation.grounding.write_box_files`); how many files were written."""
        return write_box_files(
            folder, self.corpus.examples, self.predictions, ImageStore(self.image_dir),
            self.preprocessing,
        )  # fmt: skip

    def grounding(self, boxes_file: str | Path) -> GroundingScores:
        """GMNER, MNER and EEG scores of the predicted boxes (see
        :mod:`smner.evaluation.grounding`)."""
        return score_grounding(
            self.corpus.examples,
            self.predictions,
            load_entity_boxes(boxes_file, self.corpus.examples),
            ImageStore(self.image_dir),
            self.preprocessing,
        )


def evaluate_saved_model(
    model_dir: str | Path,
    data_file: str | Path,
    image_dir: str | Path | None = None,
    label_aliases: dict[str, str] | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    feature_cache_dir: str | Path | None = None,
    progress: bool = False,
    max_file_bytes: int | None = None,
    quantize: Quantization | None = None,
    span_pruning: int | None = None,
) -> Evaluation:
    """Load ``model_dir``, predict every post of ``data_file`` and score it against its tags
    (with ``quantize="int8"`` or ``"bf16"``, as that predictor does: see
    :mod:`smner.model.quantize`;
    ``span_pruning=N`` overrides the folder's: see :mod:`smner.model.span_pruning`)."""
    corpus = read_corpus(data_file, label_aliases, max_file_bytes)
    model = load_model(model_dir).to(device)
    if quantize is not None and isinstance(model, OnnxModel):
        raise SmnerError(
            f"--quantize {quantize}: {model_dir} runs on ONNX Runtime; PyTorch's quantization "
            "applies to PyTorch folders (export with --quantize int8 instead)"
        )
    if quantize is not None:
        quantize_model(model, quantize, torch.device(device))
    if span_pruning is not None:
        set_span_pruning(model, span_pruning)
    processor = Processor.from_pretrained(model_dir)
    store = ImageStore(image_dir)
    images = ImageProvider(
        model, processor, corpus.examples, store, feature_cache_dir, progress=progress
    )
    predictions = predict_examples(
        model, processor, corpus.examples, images, batch_size, device, progress
    )
    return Evaluation(
        corpus=corpus,
        predictions=predictions,
        scores=score_predictions(corpus.examples, predictions),
        image_summary=store.summary() if images.enabled else None,
        preprocessing=processor.image,
        image_dir=Path(image_dir) if image_dir is not None else None,
        grounds=model.grounds,
    )
