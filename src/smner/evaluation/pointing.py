"""Does an explanation point at the thing it explains? Alignment metrics for span attention.

Where the data says where each entity is in the image (the generated corpus's cue boxes, or the
boxes of grounded-NER data), a span's attention over the region grid can be checked:

- *pointing accuracy*: the most attended grid cell, mapped through the crop the model saw back
  to image pixels, has its centre inside the entity's own box (the "pointing game");
- *attention mass in the box*: the share of the span's region attention that falls inside the
  box (cells split by area), against the box's share of the crop, which is what uniform
  attention would score;
- *posts fully right*: posts whose predicted entity set equals the gold set, by gold count;
- *image chosen right*: for a post with several images, the share of entities grounded in the
  image that shows them (the one whose regions got most of the span's attention); pointing
  there counts a hit only in that image, and uniform attention's share is split over the
  post's images;
- *where two names look*: posts of two entities sorted by where each gold span's attention
  peaks, whatever type it was given (own cues, swapped, both on one cue, elsewhere), which
  tells a post whose names settled on one cue from one whose names swapped cues.

Only correctly predicted entities (span and type) that have a box are scored for pointing: an
entity the model missed has no attention to check. Attention on the global visual token is left
out of the mass (the grid cells are renormalised), and reported on its own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smner.data.boxes import Box, load_box_dir
from smner.data.types import Entity
from smner.errors import DataFormatError


def _overlap(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def cell_box(row: int, col: int, grid: tuple[int, int], crop: Box) -> Box:
    """The image pixels that grid cell ``(row, col)`` covers: the crop split into equal cells."""
    rows, cols = grid
    x0, y0, x1, y1 = crop
    cell_w, cell_h = (x1 - x0) / cols, (y1 - y0) / rows
    return (x0 + col * cell_w, y0 + row * cell_h, x0 + (col + 1) * cell_w, y0 + (row + 1) * cell_h)


def pointing_hit(attention: np.ndarray, box: Box, crop: Box) -> bool:
    """Whether the centre of the most attended cell lies inside ``box`` (ends exclusive)."""
    grid = attention.shape
    row, col = np.unravel_index(int(np.argmax(attention)), grid)
    cx0, cy0, cx1, cy1 = cell_box(int(row), int(col), grid, crop)
    return _inside(((cx0 + cx1) / 2, (cy0 + cy1) / 2), box)


def _inside(point: tuple[float, float], box: Box) -> bool:
    """Whether ``point`` lies inside ``box`` (ends exclusive)."""
    x, y = point
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def mass_in_box(attention: np.ndarray, box: Box, crop: Box) -> float:
    """Share of the grid's attention inside ``box``: each cell counts by the part of it inside."""
    weights = np.asarray(attention, dtype=np.float64)
    total = float(weights.sum())
    if total <= 0:
        return 0.0
    rows, cols = weights.shape
    inside = 0.0
    for row in range(rows):
        for col in range(cols):
            cell = cell_box(row, col, (rows, cols), crop)
            inside += weights[row, col] * _overlap(cell, box) / _area(cell)
    return inside / total


def cell_coverage(boxes: Sequence[Box], crop: Box, grid: tuple[int, int]) -> np.ndarray | None:
    """How much of each grid cell the boxes cover, normalised to sum 1 (``[h * w]``, row-major):
    the attention an entity's span should have. None when no box overlaps the crop."""
    rows, cols = grid
    coverage = np.zeros(rows * cols, dtype=np.float32)
    for row in range(rows):
        for col in range(cols):
            cell = cell_box(row, col, grid, crop)
            coverage[row * cols + col] = max(_overlap(cell, box) for box in boxes) / _area(cell)
    total = float(coverage.sum())
    return coverage / total if total > 0 else None


def box_share(box: Box, crop: Box) -> float:
    """Share of the crop the box covers: the mass uniform attention would put inside it."""
    return _overlap(box, crop) / _area(crop)


@dataclass
class _Rate:
    hits: int = 0
    total: int = 0

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "hits": self.hits, "total": self.total}


@dataclass
class AlignmentScores:
    """What :class:`AlignmentScorer` reports. ``None`` where nothing could be measured."""

    #: pointing accuracy over all scored entities, and by the post's number of gold entities
    pointing: dict[str, Any]
    pointing_by_entities: dict[int, dict[str, Any]]
    #: mean attention mass inside the entity's box, and the mean box share (uniform attention)
    mass_in_box: float | None
    uniform_mass: float | None
    #: mean attention on the global visual token of the scored entities
    global_attention: float | None
    #: posts whose predicted entities equal the gold ones, by number of gold entities
    posts_right: dict[int, dict[str, Any]] = field(default_factory=dict)
    scored_entities: int = 0
    #: entities of posts with several images grounded in the image that shows them (None
    #: where no such post was scored)
    image_chosen: dict[str, Any] | None = None
    #: the baseline of always pointing at the centre of the picture the model saw (of the
    #: first image, for posts with several), on the same entities as ``pointing``
    centre: dict[str, Any] | None = None
    #: posts of two boxed entities (one image) by where each name's attention peaks, whatever
    #: type was predicted: on its own cue, the two swapped, both on one cue, or otherwise
    two_entity_peaks: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pointing": self.pointing,
            "pointing_by_entities": {str(k): v for k, v in self.pointing_by_entities.items()},
            "mass_in_box": self.mass_in_box,
            "uniform_mass": self.uniform_mass,
            "global_attention": self.global_attention,
            "posts_right": {str(k): v for k, v in self.posts_right.items()},
            "scored_entities": self.scored_entities,
            "image_chosen": self.image_chosen,
            "centre": self.centre,
            "two_entity_peaks": self.two_entity_peaks,
        }


class AlignmentScorer:
    """Accumulates posts one by one (as :class:`~smner.evaluation.metrics.EntityScorer` does)."""

    def __init__(self) -> None:
        self._pointing = _Rate()
        self._pointing_by: dict[int, _Rate] = {}
        self._posts_right: dict[int, _Rate] = {}
        self._mass: list[float] = []
        self._uniform: list[float] = []
        self._global: list[float] = []
        self._image_chosen = _Rate()
        self._centre = _Rate()
        self._peaks: Counter[str] = Counter()

    def update(
        self,
        gold: Sequence[Entity],
        predicted: Sequence[Any],
        boxes: Mapping[Entity, Sequence[Box]] | None = None,
        crop: Box | None = None,
    ) -> None:
        """Add one post.

        ``predicted`` are objects with ``entity``, ``attention`` (``[h, w]`` or None) and
        ``global_attention``; ``boxes`` maps a gold entity to its boxes in image pixels (an
        entity with several boxes is hit by any of them; one not in the map is not scored);
        ``crop`` is the part of the image the model saw (:meth:`ImagePreprocessing.crop_box`).
        """
        count = self._count_post(gold, predicted)
        if not boxes or crop is None:
            return
        gold_set = set(gold)
        for item in predicted:
            own = boxes.get(item.entity)
            if item.entity not in gold_set or not own or item.attention is None:
                continue
            self._score(item, own, crop, count, share=1.0)
        if len(gold) == 2 and all(boxes.get(entity) for entity in gold):
            self._peaks[_two_entity_peaks(gold, predicted, boxes, crop)] += 1

    def update_images(
        self,
        gold: Sequence[Entity],
        predicted: Sequence[Any],
        located: Mapping[Entity, tuple[int, Sequence[Box]]],
        crops: Sequence[Box | None],
    ) -> None:
        """Add one post with several images: ``located`` maps a gold entity to the index of
        the image that shows it and its boxes there, ``crops`` is each image's crop (None for
        an image that could not be read). ``predicted`` items also carry ``image_index``."""
        count = self._count_post(gold, predicted)
        gold_set = set(gold)
        shown = sum(crop is not None for crop in crops)
        for item in predicted:
            where = located.get(item.entity)
            if item.entity not in gold_set or where is None or item.attention is None:
                continue
            index, own = where
            crop = crops[index] if 0 <= index < len(crops) else None
            if not own or crop is None:
                continue
            chosen = item.image_index == index
            self._image_chosen.total += 1
            self._image_chosen.hits += int(chosen)
            self._score(
                item, own, crop, count, share=1.0 / max(shown, 1), chosen=chosen, first=index == 0
            )

    def _count_post(self, gold: Sequence[Entity], predicted: Sequence[Any]) -> int:
        """Count the post as fully right or not; its number of gold entities."""
        right = self._posts_right.setdefault(len(gold), _Rate())
        right.total += 1
        right.hits += int({p.entity for p in predicted} == set(gold))
        return len(gold)

    def _score(
        self,
        item: Any,
        own: Sequence[Box],
        crop: Box,
        count: int,
        share: float,
        chosen: bool = True,
        first: bool = True,
    ) -> None:
        """Pointing and mass of one entity whose attention is over the image ``crop`` frames
        (over another image when not ``chosen``: then it misses, with no mass in the box);
        ``first``: the entity is in the post's first image, where the centre baseline points."""
        attention = np.asarray(item.attention, dtype=np.float64)
        hit = chosen and any(pointing_hit(attention, box, crop) for box in own)
        mass, best = max((mass_in_box(attention, box, crop), box) for box in own)
        for rate in (self._pointing, self._pointing_by.setdefault(count, _Rate())):
            rate.total += 1
            rate.hits += int(hit)
        centre = ((crop[0] + crop[2]) / 2, (crop[1] + crop[3]) / 2)
        self._centre.total += 1
        self._centre.hits += int(first and any(_inside(centre, box) for box in own))
        self._mass.append(mass if chosen else 0.0)
        self._uniform.append(box_share(best, crop) * share)
        if item.global_attention is not None:
            self._global.append(float(item.global_attention))

    def result(self) -> AlignmentScores:
        def mean(values: list[float]) -> float | None:
            return float(np.mean(values)) if values else None

        return AlignmentScores(
            pointing=self._pointing.to_dict(),
            pointing_by_entities={k: v.to_dict() for k, v in sorted(self._pointing_by.items())},
            mass_in_box=mean(self._mass),
            uniform_mass=mean(self._uniform),
            global_attention=mean(self._global),
            posts_right={k: v.to_dict() for k, v in sorted(self._posts_right.items())},
            scored_entities=self._pointing.total,
            image_chosen=self._image_chosen.to_dict() if self._image_chosen.total else None,
            centre=self._centre.to_dict() if self._centre.total else None,
            two_entity_peaks=(
                {kind: self._peaks[kind] for kind in PEAK_KINDS} if self._peaks else None
            ),
        )


#: How :func:`_two_entity_peaks` sorts a post of two entities.
PEAK_KINDS = ("own cues", "swapped", "one cue", "elsewhere")


def _two_entity_peaks(
    gold: Sequence[Entity],
    predicted: Sequence[Any],
    boxes: Mapping[Entity, Sequence[Box]],
    crop: Box,
) -> str:
    """Which of :data:`PEAK_KINDS` a two-entity post is: read from the attention of the
    predictions on the gold spans, whatever their types, so that a post whose names looked at
    one cue (and so got one type) is told apart from one whose names swapped cues. A gold span
    without a prediction (or one without attention) is "elsewhere"."""
    attention_of = {
        (item.entity.start, item.entity.end): item.attention
        for item in predicted
        if item.attention is not None
    }
    peaks: list[int | None] = []  # the index of the gold entity whose box each one hits
    for entity in gold:
        attention = attention_of.get((entity.start, entity.end))
        hit = None
        if attention is not None:
            grid = np.asarray(attention, dtype=np.float64)
            hits = [
                index
                for index, other in enumerate(gold)
                if any(pointing_hit(grid, box, crop) for box in boxes[other])
            ]
            hit = hits[0] if len(hits) == 1 else None  # none, or boxes that overlap
        peaks.append(hit)
    if peaks == [0, 1]:
        return "own cues"
    if peaks == [1, 0]:
        return "swapped"
    if peaks[0] is not None and peaks[0] == peaks[1]:
        return "one cue"
    return "elsewhere"


def format_alignment(scores: AlignmentScores) -> str:
    """A few lines for the terminal, beside the P/R/F1 table."""

    def rate(item: dict[str, Any]) -> str:
        value = item["value"]
        shown = "n/a" if value is None else f"{value:.2f}"
        return f"{shown} ({item['hits']}/{item['total']})"

    lines = []
    right = ", ".join(f"{k} entities {rate(v)}" for k, v in scores.posts_right.items())
    lines.append(f"posts fully right: {right}")
    if scores.scored_entities:
        by = ", ".join(
            f"{k}-entity posts {rate(v)}" for k, v in scores.pointing_by_entities.items()
        )
        centre = f" (always the centre: {rate(scores.centre)})" if scores.centre else ""
        lines.append(f"pointing accuracy: {rate(scores.pointing)}{centre}; {by}")
        if scores.image_chosen is not None:
            lines.append(
                f"posts with several images: entity grounded in its own image "
                f"{rate(scores.image_chosen)} (pointing above counts a hit only there)"
            )
        lines.append(
            f"attention mass in the entity's box: {scores.mass_in_box:.2f} "
            f"(uniform attention: {scores.uniform_mass:.2f})"
        )
        if scores.global_attention is not None:
            lines.append(f"attention on the whole-image token: {scores.global_attention:.2f}")
    if scores.two_entity_peaks:
        kinds = scores.two_entity_peaks
        lines.append(
            "two-entity posts by where each name's attention peaks (any type): "
            + ", ".join(f"{kind} {kinds[kind]}" for kind in PEAK_KINDS)
            + f" (of {sum(kinds.values())})"
        )
    return "\n".join(lines)


def load_entity_boxes(
    path: str | Path, examples: Sequence[Any] = ()
) -> dict[str, dict[Entity, list[Box]]]:
    """Entity boxes by image id: from a folder of VOC XML files (matched to the ``examples``'
    entities by text, see :mod:`smner.data.boxes`) or a generated corpus's ``meta.jsonl``.

    A cue names the entity it shows (``"entity": i``; null on a mismatched image, whose cues
    are other posts'); in older files without that key, a post's ``i``-th cue belongs to its
    ``i``-th entity when their types agree, and a ``noisy`` post's entities get no box. A post
    with several images (``"image_ids"``) files each cue under the image its ``image_index``
    names, and every one of its images gets an entry.
    """
    path = Path(path)
    if path.is_dir():
        return load_box_dir(path, examples)
    boxes: dict[str, dict[Entity, list[Box]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, f"cannot read entity boxes ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entities = [Entity(int(s), int(e), str(label)) for s, e, label in record["entities"]]
            cues = [
                (str(c["type"]), tuple(float(v) for v in c["box"]), c.get("entity", -1))
                for c in record["cues"]
            ]
            image_id, noisy = str(record["image_id"]), bool(record.get("noisy", False))
            image_ids = [str(i) for i in record.get("image_ids") or [image_id]]
            shown_in = [int(c.get("image_index", 0)) for c in record["cues"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFormatError(
                path,
                number,
                f"expected a meta.jsonl record with image_id, entities and cues ({exc})",
            ) from None
        per_image: list[dict[Entity, list[Box]]] = [{} for _ in image_ids]
        for slot, ((kind, box, index), shown) in enumerate(zip(cues, shown_in, strict=True)):
            legacy = index == -1
            if legacy:
                index = None if noisy else slot
            if not isinstance(index, int) or not 0 <= index < len(entities) or len(box) != 4:
                continue
            if not 0 <= shown < len(image_ids):
                raise DataFormatError(
                    path, number, f"a cue's image_index {shown} is not one of the post's images"
                )
            entity = entities[index]
            if kind == entity.type or not legacy:
                per_image[shown].setdefault(entity, []).append(box)  # type: ignore[arg-type]
        boxes.update(zip(image_ids, per_image, strict=True))
    return boxes


def score_alignment(
    examples: Sequence[Any],
    predictions: Sequence[Sequence[Any]],
    boxes: Mapping[str, Mapping[Entity, Sequence[Box]]],
    store: Any,
    preprocessing: Any,
) -> AlignmentScores:
    """Alignment scores of a data set's predictions (``examples`` with ``entities`` and
    ``image_id``), reading each image through ``store`` (an :class:`ImageStore`, so EXIF
    rotation is as the model saw it) for the crop ``preprocessing`` took of it."""
    scorer = AlignmentScorer()
    for example, post in zip(examples, predictions, strict=True):
        several = getattr(example, "image_ids", None)
        if several and len(several) > 1:
            located = {
                entity: (index, own)
                for index, image_id in enumerate(several)
                for entity, own in boxes.get(image_id, {}).items()
            }
            crops = [_crop(image_id, store, preprocessing) for image_id in several]
            scorer.update_images(example.entities, post, located, crops)
            continue
        own = boxes.get(example.image_id) if example.image_id else None
        crop = _crop(example.image_id, store, preprocessing) if own else None
        scorer.update(example.entities, post, own, crop)
    return scorer.result()


def _crop(image_id: str, store: Any, preprocessing: Any) -> Box | None:
    """The crop the model took of image ``image_id`` (None where it cannot be read)."""
    if preprocessing is None:
        return None
    picture, _ = store.load(image_id, count=False)
    return None if picture is None else preprocessing.crop_box(*picture.size)
