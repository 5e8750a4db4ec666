"""Grounded NER scores: is each entity's box, or its absence from the image, right?

The metrics of grounded multimodal NER (GMNER; Yu et al., ACL 2023). A prediction is a triple
(span, type, region), the region a box or "not in the image" (None):

- *GMNER*: span, type and region all right;
- *MNER*: span and type right (the region ignored), as plain NER scores;
- *EEG* (entity extraction and grounding): span and region right (the type ignored).

A predicted box is right when its intersection over union with one of the gold boxes of that
entity is above 0.5; "not in the image" is right only when the gold entity has no box. Boxes are
in pixels of the upright image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smner.data.boxes import Box, box_to_pixels, upright_size
from smner.data.types import Entity

#: a predicted box is right above this IoU with a gold box
IOU_THRESHOLD = 0.5


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when either has no area)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def region_right(predicted: Box | None, gold: Sequence[Box]) -> bool:
    """Whether a predicted region matches an entity's gold boxes (none: not in the image)."""
    if predicted is None:
        return not gold
    return any(box_iou(predicted, box) > IOU_THRESHOLD for box in gold)


@dataclass
class _Counts:
    correct: int = 0
    predicted: int = 0
    gold: int = 0

    def to_dict(self) -> dict[str, float | int]:
        precision = self.correct / self.predicted if self.predicted else 0.0
        recall = self.correct / self.gold if self.gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "correct": self.correct,
            "predicted": self.predicted,
            "gold": self.gold,
        }


@dataclass(frozen=True)
class GroundingScores:
    """GMNER, MNER and EEG precision, recall and F1 (fractions in [0, 1]), with their counts,
    and how many gold entities are in the image."""

    gmner: dict[str, float | int]
    mner: dict[str, float | int]
    eeg: dict[str, float | int]
    groundable: int
    entities: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "gmner": self.gmner,
            "mner": self.mner,
            "eeg": self.eeg,
            "groundable_entities": self.groundable,
            "entities": self.entities,
        }


class GroundingScorer:
    """Accumulates the three scores post by post."""

    def __init__(self) -> None:
        self._gmner, self._mner, self._eeg = _Counts(), _Counts(), _Counts()
        self._groundable = 0

    def update(
        self,
        gold: Sequence[Entity],
        gold_boxes: Mapping[Entity, Sequence[Box]],
        predicted: Iterable[tuple[Entity, Box | None]],
    ) -> None:
        """One post: its gold entities, their boxes (an entity missing from the map is not in
        the image), and the predicted (entity, box or None) pairs."""
        predicted = list(predicted)
        gold_set = set(gold)
        boxes_by_span: dict[tuple[int, int], list[Box]] = {}
        for entity in gold:
            boxes_by_span.setdefault((entity.start, entity.end), []).extend(
                gold_boxes.get(entity, ())
            )
        self._groundable += sum(bool(gold_boxes.get(entity)) for entity in gold_set)
        spans = {(e.start, e.end) for e in gold}
        for counts in (self._gmner, self._mner):
            counts.gold += len(gold_set)
            counts.predicted += len(predicted)
        self._eeg.gold += len(spans)
        self._eeg.predicted += len({(e.start, e.end) for e, _ in predicted})
        eeg_right: set[tuple[int, int]] = set()
        for entity, box in predicted:
            if entity in gold_set:
                self._mner.correct += 1
                if region_right(box, gold_boxes.get(entity, ())):
                    self._gmner.correct += 1
            span = (entity.start, entity.end)
            if span in spans and region_right(box, boxes_by_span[span]):
                eeg_right.add(span)
        self._eeg.correct += len(eeg_right)

    def result(self) -> GroundingScores:
        return GroundingScores(
            gmner=self._gmner.to_dict(),
            mner=self._mner.to_dict(),
            eeg=self._eeg.to_dict(),
            groundable=self._groundable,
            entities=self._mner.gold,
        )


def format_grounding(scores: GroundingScores) -> str:
    """A few lines for the terminal, beside the P/R/F1 table."""
    lines = [
        f"grounding ({scores.groundable} of {scores.entities} gold entities are in the image):"
    ]
    for name, values in (("GMNER", scores.gmner), ("MNER", scores.mner), ("EEG", scores.eeg)):
        lines.append(
            f"  {name:<6} P {100 * values['precision']:5.1f}  R {100 * values['recall']:5.1f}  "
            f"F1 {100 * values['f1']:5.1f}"
        )
    return "\n".join(lines)


def pixel_boxes(
    example: Any, post: Sequence[Any], store: Any, preprocessing: Any
) -> tuple[tuple[int, int] | None, list[tuple[Entity, Box | None]]]:
    """The image's size and each predicted entity with its box in pixels (None: not in the
    image), mapped from the crop the model saw (``preprocessing``) of the image ``store`` finds;
    only the image's header is read."""
    crop = size = None
    if preprocessing is not None and any(p.box_in_crop is not None for p in post):
        # the size from the header (EXIF rotation applied), as the model saw the image
        size = upright_size(store.path_for(example.image_id))
        if size is not None:
            crop = preprocessing.crop_box(*size)
    pairs: list[tuple[Entity, Box | None]] = []
    for item in post:
        box = None
        if item.box_in_crop is not None and crop is not None and size is not None:
            box = box_to_pixels(item.box_in_crop, crop, size)
        pairs.append((item.entity, box))
    return size, pairs


def score_grounding(
    examples: Sequence[Any],
    predictions: Sequence[Sequence[Any]],
    boxes: Mapping[str, Mapping[Entity, Sequence[Box]]],
    store: Any,
    preprocessing: Any,
) -> GroundingScores:
    """Grounding scores of a data set's predictions (``examples`` with ``entities`` and
    ``image_id``; :class:`~smner.model.base.PredictedEntity` lists). A post whose image has no
    box file has none of its entities in the image."""
    scorer = GroundingScorer()
    for example, post in zip(examples, predictions, strict=True):
        own = boxes.get(example.image_id, {}) if example.image_id else {}
        scorer.update(example.entities, own, pixel_boxes(example, post, store, preprocessing)[1])
    return scorer.result()


def write_box_files(
    folder: str | Path,
    examples: Sequence[Any],
    predictions: Sequence[Sequence[Any]],
    store: Any,
    preprocessing: Any,
) -> int:
    """The predicted boxes as a folder of VOC files, the layout of grounded-NER data (one
    ``<image id>.xml`` per image with at least one boxed entity, objects named by the entity's
    text), swapped in whole; returns how many files were written. ``smner score --pred-boxes``
    reads them back."""
    from smner.data.boxes import format_voc
    from smner.fileio import make_staging_dir, replace_directory

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging_dir(folder.parent, f".{folder.name}.partial-")
    written = 0
    for example, post in zip(examples, predictions, strict=True):
        size, pairs = pixel_boxes(example, post, store, preprocessing)
        objects = [
            (" ".join(example.tokens[e.start : e.end]), box) for e, box in pairs if box is not None
        ]
        if objects and size is not None and example.image_id:
            (staging / f"{example.image_id}.xml").write_text(
                format_voc(example.image_id, size, objects), encoding="utf-8"
            )
            written += 1
    replace_directory(staging, folder)
    return written


def score_box_files(
    gold: Sequence[Any],
    predicted: Sequence[Any],
    gold_boxes: Mapping[str, Mapping[Entity, Sequence[Box]]],
    predicted_boxes: Mapping[str, Mapping[Entity, Sequence[Box]]],
) -> GroundingScores:
    """Grounding scores from files: gold and predicted posts (the same posts, in order) and
    the boxes of each side's entities (see :func:`smner.data.boxes.load_box_dir`); a predicted
    entity with no box is "not in the image"."""
    scorer = GroundingScorer()
    for g, p in zip(gold, predicted, strict=True):
        own = gold_boxes.get(g.image_id, {}) if g.image_id else {}
        mine = predicted_boxes.get(p.image_id, {}) if p.image_id else {}
        scorer.update(
            g.entities, own, [(e, mine[e][0] if mine.get(e) else None) for e in p.entities]
        )
    return scorer.result()
