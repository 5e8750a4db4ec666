"""From words to tensors: word shapes, sub-word alignment, suggested spans, gold labels,
images and box targets, assembled into a :class:`Batch`.

The :class:`~smner.processing.processor.Processor` is the single place where posts become a
batch (it calls :func:`make_batch` with its settings), shared by training, evaluation and
prediction, and by every model type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from smner.data.spans import span_label_ids
from smner.data.types import Entity

#: words of each post -> ``input_ids``, ``attention_mask``, ``word_index``, ``subword_word``
#: (an :class:`smner.encoders.text.WordTokenizer`; the data layer only calls it)
WordPieces = Callable[[Sequence[Sequence[str]]], Mapping[str, torch.Tensor]]

# Word-shape classes. The offline encoders lowercase their input, so case lives here.
SHAPES = (
    "pad",
    "lower",
    "title",
    "upper",
    "mixed",
    "digit",
    "mention",
    "hashtag",
    "url",
    "punct",
    "other",
)
_SHAPE_ID = {name: i for i, name in enumerate(SHAPES)}
_URL_RE = re.compile(r"^(?:https?://|www\.)", re.IGNORECASE)


def word_shape(token: str) -> int:
    """Shape class id of a token (see :data:`SHAPES`)."""
    if _URL_RE.match(token):
        return _SHAPE_ID["url"]
    if len(token) > 1 and token[0] == "@":
        return _SHAPE_ID["mention"]
    if len(token) > 1 and token[0] == "#":
        return _SHAPE_ID["hashtag"]
    letters = [c for c in token if c.isalpha()]
    if not letters:
        if any(c.isdigit() for c in token):
            return _SHAPE_ID["digit"]
        return _SHAPE_ID["punct"] if token.strip() else _SHAPE_ID["other"]
    if all(c.islower() for c in letters):
        return _SHAPE_ID["lower"]
    if all(c.isupper() for c in letters):
        return _SHAPE_ID["upper"] if len(letters) > 1 else _SHAPE_ID["title"]
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return _SHAPE_ID["title"]
    return _SHAPE_ID["mixed"]


#: a box (x0, y0, x1, y1) in [0, 1] coordinates of the crop the model sees
BoxCoords = tuple[float, float, float, float]


@dataclass
class Batch:
    """Tensors for one batch. ``T`` words, ``L`` sub-words, ``S`` spans, ``K`` image regions.

    Images: a batch where no post has more than one image holds ``[B, Dv]`` pooled and
    ``[B, K, Dv]`` region features (or ``[B, 3, H, W]`` pixels) and no ``image_mask``. A batch
    with a post of several images holds ``M`` slots a post: ``[B, M, Dv]``, ``[B, M, K, Dv]``
    (or ``[B, M, 3, H, W]``), and ``image_mask [B, M]`` says which slots hold an image (zero
    features elsewhere); ``has_image`` is whether a post has any.
    """

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    word_index: torch.Tensor  # [B, T] first sub-word position of each word
    subword_word: torch.Tensor  # [B, L] word of each sub-word, -1 for specials and padding
    word_mask: torch.Tensor  # [B, T] bool
    shape_ids: torch.Tensor  # [B, T]
    spans: torch.Tensor  # [S, 2] (start, exclusive end), shared by the batch
    span_mask: torch.Tensor  # [B, S] bool: span lies inside the post
    has_image: torch.Tensor  # [B] bool
    image_pooled: torch.Tensor | None = None  # [B, Dv] or [B, M, Dv] precomputed
    image_regions: torch.Tensor | None = None  # [B, K, Dv] or [B, M, K, Dv]
    pixel_values: torch.Tensor | None = None  # [B, 3, H, W] or [B, M, 3, H, W] raw
    #: [B, M] bool: which image slots hold an image (only in a batch with several slots)
    image_mask: torch.Tensor | None = None
    span_labels: torch.Tensor | None = None  # [B, S] label id per span, 0 = O
    token_labels: torch.Tensor | None = None  # [B, T] BIO label id per word, -100 = padding
    #: supervised span attention: (post, span) pairs [N, 2] and their target over regions [N, K]
    attention_target_index: torch.Tensor | None = None
    attention_target: torch.Tensor | None = None
    #: grounding: gold entities (post, span) [N, 2] of posts whose boxes are known, whether each
    #: is in the image [N], and its boxes in crop coordinates [N, M, 4] with their mask [N, M]
    ground_index: torch.Tensor | None = None
    ground_in_image: torch.Tensor | None = None
    ground_boxes: torch.Tensor | None = None
    ground_box_mask: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.size(0))

    @property
    def image_slots(self) -> int:
        """``M``: the image slots a post has in this batch (1 without ``image_mask``)."""
        return 1 if self.image_mask is None else int(self.image_mask.size(1))

    def slot_mask(self) -> torch.Tensor:
        """``[B, M]`` bool: which image slots hold an image (``has_image`` for one slot)."""
        return self.has_image.unsqueeze(1) if self.image_mask is None else self.image_mask

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)


@dataclass
class ImageInput:
    """What a post brings of its image: precomputed features, raw pixels, or nothing."""

    pooled: torch.Tensor | None = None  # [Dv]
    regions: torch.Tensor | None = None  # [K, Dv]
    pixels: torch.Tensor | None = None  # [3, H, W]


#: what a post brings to a batch: one image input, one per image slot (None where that
#: slot's image is missing), or None (no image)
PostImages = ImageInput | Sequence[ImageInput | None] | None


def make_batch(
    word_pieces: WordPieces,
    suggest_spans: Callable[[Sequence[int], int], tuple[np.ndarray, np.ndarray]],
    max_span_width: int,
    label_to_id: Mapping[str, int],
    bio_label_to_id: Mapping[str, int] | None,
    tokens: Sequence[Sequence[str]],
    entities: Sequence[Sequence[Entity]] | None = None,
    images: Sequence[PostImages] | None = None,
    attention_targets: Sequence[Mapping[Entity, np.ndarray] | None] | None = None,
    box_targets: Sequence[Mapping[Entity, Sequence[BoxCoords]] | None] | None = None,
) -> Batch:
    """The :class:`Batch` of posts' words (with gold labels, images and box targets when
    given); :class:`~smner.processing.processor.Processor` calls it with its own settings."""
    lengths = [len(t) for t in tokens]
    encoded = word_pieces(tokens)
    num_words = encoded["word_index"].size(1)
    word_mask = torch.arange(num_words)[None, :] < torch.tensor(lengths)[:, None]
    shape_ids = torch.zeros((len(tokens), num_words), dtype=torch.long)
    for b, words in enumerate(tokens):
        shape_ids[b, : len(words)] = torch.tensor([word_shape(w) for w in words])
    spans, span_mask = suggest_spans(lengths, max_span_width)
    batch = Batch(
        **encoded,
        word_mask=word_mask,
        shape_ids=shape_ids,
        spans=torch.from_numpy(np.ascontiguousarray(spans)),
        span_mask=torch.from_numpy(span_mask),
        has_image=torch.zeros(len(tokens), dtype=torch.bool),
    )
    if entities is not None:
        labels = (
            np.stack(
                [
                    span_label_ids(spans, ents, dict(label_to_id), max_span_width)
                    for ents in entities
                ]
            )
            if len(spans)
            else np.zeros((len(tokens), 0), dtype=np.int64)
        )
        batch.span_labels = torch.from_numpy(labels) * batch.span_mask
        if bio_label_to_id is not None:
            batch.token_labels = token_labels(bio_label_to_id, tokens, entities, num_words)
    if images is not None:
        add_images(batch, images)
    if attention_targets is not None:
        add_attention_targets(batch, spans, attention_targets)
    if box_targets is not None:
        add_box_targets(batch, spans, box_targets)
    return batch


def add_box_targets(
    batch: Batch,
    spans: np.ndarray,
    targets: Sequence[Mapping[Entity, Sequence[BoxCoords]] | None],
) -> None:
    """Every gold entity of a post with an image and known boxes: its span's index,
    whether it is in the image, and its boxes (crop coordinates)."""
    index_of = {(int(s), int(e)): i for i, (s, e) in enumerate(spans)}
    pairs: list[tuple[int, int]] = []
    rows: list[Sequence[BoxCoords]] = []
    for b, own in enumerate(targets):
        if own is None or not bool(batch.has_image[b]):
            continue
        for entity, boxes in own.items():
            span = index_of.get((entity.start, entity.end))
            if span is not None:
                pairs.append((b, span))
                rows.append(boxes)
    if not pairs:
        return
    most = max(1, max(len(r) for r in rows))
    boxes_tensor = torch.zeros((len(rows), most, 4))
    mask = torch.zeros((len(rows), most), dtype=torch.bool)
    for i, row in enumerate(rows):
        if row:
            boxes_tensor[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
            mask[i, : len(row)] = True
    batch.ground_index = torch.tensor(pairs, dtype=torch.long)
    batch.ground_in_image = mask.any(-1).float()
    batch.ground_boxes, batch.ground_box_mask = boxes_tensor, mask


def add_attention_targets(
    batch: Batch,
    spans: np.ndarray,
    targets: Sequence[Mapping[Entity, np.ndarray] | None],
) -> None:
    """Where a post's gold entity has a box: its span's index and target attention."""
    index_of = {(int(s), int(e)): i for i, (s, e) in enumerate(spans)}
    pairs, rows = [], []
    for b, own in enumerate(targets):
        for entity, target in (own or {}).items():
            span = index_of.get((entity.start, entity.end))
            if span is not None and bool(batch.has_image[b]):
                pairs.append((b, span))
                rows.append(target)
    if pairs:
        batch.attention_target_index = torch.tensor(pairs, dtype=torch.long)
        batch.attention_target = torch.from_numpy(np.stack(rows)).float()


def token_labels(
    bio_label_to_id: Mapping[str, int],
    tokens: Sequence[Sequence[str]],
    entities: Sequence[Sequence[Entity]],
    width: int,
) -> torch.Tensor:
    """BIO tag ids per word, -100 on padding."""
    labels = torch.full((len(tokens), width), -100, dtype=torch.long)
    for b, (words, ents) in enumerate(zip(tokens, entities, strict=True)):
        labels[b, : len(words)] = 0
        for e in ents:
            labels[b, e.start] = bio_label_to_id[f"B-{e.type}"]
            labels[b, e.start + 1 : e.end] = bio_label_to_id[f"I-{e.type}"]
    return labels


def add_images(batch: Batch, images: Sequence[PostImages]) -> None:
    """Each post's image input (or a list of them, one per image slot, None where a slot's
    image is missing) into the batch: the one-image layout when no post has more than one
    slot, else ``M`` slots a post with an ``image_mask`` (see :class:`Batch`)."""
    slots = [[im] if im is None or isinstance(im, ImageInput) else list(im) for im in images]
    width = max((len(s) for s in slots), default=1)
    if width <= 1:
        _add_single(batch, [s[0] if s else None for s in slots])
        return
    mask = torch.tensor(
        [[j < len(s) and s[j] is not None for j in range(width)] for s in slots],
        dtype=torch.bool,
    )
    batch.has_image = mask.any(1)
    batch.image_mask = mask
    present = [(i, j) for i, j in mask.nonzero().tolist()]
    if not present:
        return
    first = slots[present[0][0]][present[0][1]]
    assert first is not None
    if first.pixels is not None:
        pixels = first.pixels.new_zeros((len(slots), width, *first.pixels.shape), dtype=torch.float)
        for i, j in present:
            pixels[i, j] = slots[i][j].pixels  # type: ignore[union-attr]
        batch.pixel_values = pixels
        return
    assert first.pooled is not None and first.regions is not None
    shape = (len(slots), width)
    pooled = first.pooled.new_zeros((*shape, *first.pooled.shape), dtype=torch.float)
    regions = first.regions.new_zeros((*shape, *first.regions.shape), dtype=torch.float)
    for i, j in present:
        pooled[i, j] = slots[i][j].pooled  # type: ignore[union-attr]
        regions[i, j] = slots[i][j].regions  # type: ignore[union-attr]
    batch.image_pooled, batch.image_regions = pooled, regions


def _add_single(batch: Batch, images: Sequence[ImageInput | None]) -> None:
    present = [i for i, im in enumerate(images) if im is not None]
    batch.has_image = torch.tensor([im is not None for im in images], dtype=torch.bool)
    if not present:
        return
    first = images[present[0]]
    assert first is not None
    # On the device of the given tensors: features the encoder has just computed on a GPU
    # stay there (no round trip through the CPU per post).
    if first.pixels is not None:
        pixels = first.pixels.new_zeros((len(images), *first.pixels.shape), dtype=torch.float)
        for i in present:
            pixels[i] = images[i].pixels  # type: ignore[union-attr]
        batch.pixel_values = pixels
        return
    assert first.pooled is not None and first.regions is not None
    pooled = first.pooled.new_zeros((len(images), *first.pooled.shape), dtype=torch.float)
    regions = first.regions.new_zeros((len(images), *first.regions.shape), dtype=torch.float)
    for i in present:
        pooled[i] = images[i].pooled  # type: ignore[union-attr]
        regions[i] = images[i].regions  # type: ignore[union-attr]
    batch.image_pooled, batch.image_regions = pooled, regions
