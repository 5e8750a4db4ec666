"""Spans: BIO <-> entity conversion, span enumeration (the suggester) and overlap-free decoding.

The enumeration is kept apart from the model that labels the spans, so that any span labeller
(and the scorer) shares one definition of which spans exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from smner.data.types import Entity

OUTSIDE = "O"


def split_tag(tag: str) -> tuple[str, str | None]:
    """Split a BIO tag: ``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", None)``."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    return tag[0], tag[2:]


def bio_to_entities(tags: Sequence[str]) -> list[Entity]:
    """Entities of a BIO sequence, exactly as seqeval's default mode and conlleval read them.

    An ``I-X`` that does not continue an entity of type X starts a new entity; a type change
    ends the current entity. Tags must already be valid (``O``, ``B-X`` or ``I-X``).
    """
    entities: list[Entity] = []
    start: int | None = None
    label: str | None = None
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if start is not None and (prefix != "I" or kind != label):
            entities.append(Entity(start, i, label))  # type: ignore[arg-type]
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, label = i, kind
    if start is not None:
        entities.append(Entity(start, len(tags), label))  # type: ignore[arg-type]
    return entities


def count_i_starts(tags: Sequence[str], entities: Iterable[Entity]) -> int:
    """How many of ``entities`` begin with an ``I-`` tag (a quirk of Twitter-2015)."""
    return sum(1 for e in entities if tags[e.start].startswith("I-"))


def entities_to_bio(entities: Iterable[Entity], length: int) -> list[str]:
    """BIO tags for non-overlapping entities in a post of ``length`` tokens."""
    tags = [OUTSIDE] * length
    for e in sorted(entities):
        if not 0 <= e.start < e.end <= length:
            raise ValueError(f"entity {e} lies outside a post of {length} tokens")
        if any(t != OUTSIDE for t in tags[e.start : e.end]):
            raise ValueError(f"entity {e} overlaps another entity")
        tags[e.start] = f"B-{e.type}"
        for i in range(e.start + 1, e.end):
            tags[i] = f"I-{e.type}"
    return tags


def enumerate_spans(length: int, max_width: int) -> np.ndarray:
    """All spans of at most ``max_width`` tokens in a post of ``length`` tokens.

    Returns an int64 array ``[S, 2]`` of ``(start, end)`` with exclusive ends, ordered by start
    and then width.
    """
    if max_width < 1:
        raise ValueError("max_width must be at least 1")
    starts = np.arange(length, dtype=np.int64)[:, None]
    ends = starts + np.arange(1, max_width + 1, dtype=np.int64)[None, :]
    valid = ends <= length
    return np.stack([np.broadcast_to(starts, ends.shape)[valid], ends[valid]], axis=-1)


def batch_spans(lengths: Sequence[int], max_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Spans shared by a batch of posts, padded to the longest: ``(spans [S, 2], mask [B, S])``.

    Every post uses the span list of the longest post; ``mask[b, s]`` says whether span ``s``
    fits inside post ``b``. One enumeration serves the whole batch.
    """
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    spans = enumerate_spans(int(lengths_arr.max(initial=0)), max_width)
    mask = spans[None, :, 1] <= lengths_arr[:, None]
    return spans, mask


def no_spans(lengths: Sequence[int], max_width: int) -> tuple[np.ndarray, np.ndarray]:
    """The suggester of a model that labels words, not spans (the BIO taggers): none."""
    return np.zeros((0, 2), dtype=np.int64), np.zeros((len(lengths), 0), dtype=bool)


def span_label_ids(
    spans: np.ndarray,
    entities: Iterable[Entity],
    label_to_id: dict[str, int],
    max_width: int,
) -> np.ndarray:
    """Gold label id of each span (0 = not an entity); entities wider than ``max_width`` get none.

    A dense ``[start, width]`` table makes the lookup one vectorised gather.
    """
    n = int(spans[:, 1].max(initial=0))
    table = np.zeros((max(n, 1), max_width), dtype=np.int64)
    for e in entities:
        if e.length <= max_width and e.end <= n:
            table[e.start, e.length - 1] = label_to_id[e.type]
    if len(spans) == 0:
        return np.zeros(0, dtype=np.int64)
    return table[spans[:, 0], spans[:, 1] - spans[:, 0] - 1]


def decode_non_overlapping(
    spans: np.ndarray,
    label_ids: np.ndarray,
    scores: np.ndarray,
    id_to_label: Sequence[str],
) -> list[tuple[Entity, float]]:
    """Keep spans whose label is not ``O`` (id 0); resolve overlaps greedily by score.

    Returns ``(entity, score)`` pairs sorted by position. Only candidate spans are visited, so
    the Python loop runs over the few spans predicted as entities, not over every span.
    """
    candidates = np.flatnonzero(label_ids != 0)
    if candidates.size == 0:
        return []
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    taken = np.zeros(int(spans[order, 1].max()), dtype=bool)
    kept: list[tuple[Entity, float]] = []
    for s in order:
        start, end = int(spans[s, 0]), int(spans[s, 1])
        if taken[start:end].any():
            continue
        taken[start:end] = True
        kept.append((Entity(start, end, id_to_label[int(label_ids[s])]), float(scores[s])))
    kept.sort(key=lambda pair: pair[0])
    return kept


def bio_tags(labels: Sequence[str]) -> list[str]:
    """Tag names by id for a BIO tagger: ``O`` then ``B-X``, ``I-X`` for each type."""
    return ["O", *[f"{prefix}-{label}" for label in labels for prefix in ("B", "I")]]
