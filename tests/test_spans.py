from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from smner.data.spans import (
    batch_spans,
    bio_to_entities,
    count_i_starts,
    decode_non_overlapping,
    entities_to_bio,
    enumerate_spans,
    span_label_ids,
)
from smner.data.types import Entity

TAGS = st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-MISC"]), max_size=25)


@settings(max_examples=500, deadline=None)
@given(TAGS)
def test_bio_to_entities_matches_seqeval(tags: list[str]) -> None:
    ours = {(e.type, e.start, e.end - 1) for e in bio_to_entities(tags)}
    assert ours == set(get_entities(tags))
    assert len(bio_to_entities(tags)) == len(get_entities(tags))


def test_i_starts_are_entities_and_are_counted() -> None:
    tags = ["I-PER", "I-PER", "O", "B-LOC", "I-ORG"]
    entities = bio_to_entities(tags)
    assert entities == [Entity(0, 2, "PER"), Entity(3, 4, "LOC"), Entity(4, 5, "ORG")]
    assert count_i_starts(tags, entities) == 2


@settings(max_examples=300, deadline=None)
@given(TAGS)
def test_bio_round_trip_through_entities(tags: list[str]) -> None:
    entities = bio_to_entities(tags)
    assert bio_to_entities(entities_to_bio(entities, len(tags))) == entities


def test_entities_to_bio_refuses_overlap_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        entities_to_bio([Entity(0, 2, "PER"), Entity(1, 3, "LOC")], 4)
    with pytest.raises(ValueError, match="outside"):
        entities_to_bio([Entity(3, 5, "PER")], 4)


@pytest.mark.parametrize(("length", "width"), [(0, 3), (1, 3), (2, 3), (7, 1), (7, 4), (50, 6)])
def test_enumerate_spans_equals_the_naive_double_loop(length: int, width: int) -> None:
    naive = [(i, j) for i in range(length) for j in range(i + 1, min(i + width, length) + 1)]
    spans = enumerate_spans(length, width)
    assert spans.dtype == np.int64 and spans.shape == (len(naive), 2)
    assert [tuple(s) for s in spans.tolist()] == naive


def test_batch_spans_masks_spans_past_each_post() -> None:
    spans, mask = batch_spans([3, 1], max_width=2)
    assert spans.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    assert mask.tolist() == [[True] * 5, [True, False, False, False, False]]


def test_span_label_ids_gives_gold_labels_and_ignores_too_long_entities() -> None:
    spans = enumerate_spans(6, 2)
    entities = [Entity(0, 2, "PER"), Entity(3, 6, "LOC"), Entity(5, 6, "ORG")]
    ids = span_label_ids(spans, entities, {"PER": 1, "LOC": 2, "ORG": 3}, max_width=2)
    labelled = {tuple(spans[k]): int(ids[k]) for k in np.flatnonzero(ids)}
    assert labelled == {(0, 2): 1, (5, 6): 3}


def test_decode_keeps_best_non_overlapping_spans() -> None:
    spans = np.array([[0, 1], [0, 2], [1, 2], [3, 4], [2, 3]])
    label_ids = np.array([1, 2, 1, 0, 1])
    scores = np.array([0.6, 0.9, 0.8, 0.99, 0.5])
    kept = decode_non_overlapping(spans, label_ids, scores, ["O", "PER", "LOC"])
    assert kept == [(Entity(0, 2, "LOC"), 0.9), (Entity(2, 3, "PER"), 0.5)]
    assert decode_non_overlapping(spans, np.zeros(5, dtype=int), scores, ["O"]) == []
