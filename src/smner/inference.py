"""From examples to predictions: the one inference loop under evaluation, training's dev
scoring and the :class:`~smner.predict.Predictor`.

Devices, batching, collation, prediction in length order, and the evaluation of a saved model
(its scores and, where boxes are given, where its attention looks). Training imports this
module; nothing here imports training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from smner.data.batching import Batch, BoxCoords, Collator
from smner.data.conll import Corpus, read_conll
from smner.data.images import ImageStore
from smner.data.types import Entity, Example
from smner.encoders.image import ImagePreprocessing
from smner.errors import SmnerError
from smner.grounding import GroundingScores, score_grounding, write_box_files
from smner.images_input import ImageProvider
from smner.metrics import EntityScorer, Scores
from smner.model import NERModel
from smner.model.base import PredictedEntity
from smner.pointing import AlignmentScores, load_entity_boxes, score_alignment
from smner.processor import Processor
from smner.quantize import Quantization, quantize_model


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` as a device; one that is not here is an error
    now, not a traceback at the first step."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise SmnerError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SmnerError(f"device {name!r}: no CUDA GPU is available here; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SmnerError(
                f"device {name!r}: there are {torch.cuda.device_count()} CUDA GPU(s) here"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SmnerError(f"device {name!r}: MPS is not available here; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SmnerError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


def collate(
    processor: Collator,
    examples: Sequence[Example],
    indices: Sequence[int],
    images: ImageProvider,
    with_labels: bool,
    attention_targets: Sequence[dict[Entity, np.ndarray] | None] | None = None,
    box_targets: Sequence[dict[Entity, list[BoxCoords]] | None] | None = None,
) -> Batch:
    chosen = [examples[i] for i in indices]
    return processor(
        [ex.tokens for ex in chosen],
        [ex.entities for ex in chosen] if with_labels else None,
        images(indices),
        [attention_targets[i] for i in indices] if attention_targets is not None else None,
        [box_targets[i] for i in indices] if box_targets is not None else None,
    )


@torch.no_grad()
def predict_examples(
    model: NERModel,
    processor: Collator,
    examples: Sequence[Example],
    images: ImageProvider,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "predict",
) -> list[list[PredictedEntity]]:
    """Predictions for every example, in order (sorted by length inside for speed)."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    results: list[list[PredictedEntity]] = [[] for _ in examples]
    bar = tqdm(total=len(examples), desc=description, disable=not progress, unit="post")
    for chunk in batches(order, batch_size):
        batch = collate(processor, examples, chunk, images, with_labels=False).to(device)
        for i, post in zip(chunk, model.predict(batch), strict=True):
            results[i] = post
        bar.update(len(chunk))
    bar.close()
    return results


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
        """How well the attention points at each entity's box (see :mod:`smner.pointing`)."""
        return score_alignment(
            self.corpus.examples,
            self.predictions,
            load_entity_boxes(boxes_file, self.corpus.examples),
            ImageStore(self.image_dir),
            self.preprocessing,
        )

    def write_boxes(self, folder: str | Path) -> int:
        """The predicted boxes as VOC files in ``folder`` (see
        :func:`smner.grounding.write_box_files`); how many files were written."""
        return write_box_files(
            folder, self.corpus.examples, self.predictions, ImageStore(self.image_dir),
            self.preprocessing,
        )  # fmt: skip

    def grounding(self, boxes_file: str | Path) -> GroundingScores:
        """GMNER, MNER and EEG scores of the predicted boxes (see :mod:`smner.grounding`)."""
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
) -> Evaluation:
    """Load ``model_dir``, predict every post of ``data_file`` and score it against its tags
    (with ``quantize="int8"``, as the int8 predictor does: see :mod:`smner.quantize`)."""
    corpus = read_conll(data_file, label_aliases, max_file_bytes)
    model = NERModel.from_pretrained(model_dir).to(device)
    if quantize is not None:
        quantize_model(model, quantize, torch.device(device))
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
