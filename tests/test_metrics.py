from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from smner.data.conll import read_conll
from smner.data.spans import bio_to_entities
from smner.data.types import Entity
from smner.evaluation.metrics import EntityScorer, score_entities
from tests.benchmark_fixture import Benchmark

TAG = st.sampled_from(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-MISC"])


def assert_matches_seqeval(gold: list[list[str]], pred: list[list[str]]) -> None:
    ours = score_entities(map(bio_to_entities, gold), map(bio_to_entities, pred))
    assert ours.precision == pytest.approx(precision_score(gold, pred, zero_division=0), abs=1e-9)
    assert ours.recall == pytest.approx(recall_score(gold, pred, zero_division=0), abs=1e-9)
    assert ours.f1 == pytest.approx(f1_score(gold, pred, zero_division=0), abs=1e-9)
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    types = {k for k in report if not k.endswith("avg")}
    assert set(ours.per_type) == types
    for label, s in ours.per_type.items():
        assert s.precision == pytest.approx(report[label]["precision"], abs=1e-9)
        assert s.recall == pytest.approx(report[label]["recall"], abs=1e-9)
        assert s.f1 == pytest.approx(report[label]["f1-score"], abs=1e-9)
        assert s.support == report[label]["support"]
    assert ours.support == sum(len(bio_to_entities(g)) for g in gold)


@st.composite
def paired_sequences(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]]]:
    lengths = draw(st.lists(st.integers(1, 15), min_size=1, max_size=6))
    gold = [draw(st.lists(TAG, min_size=n, max_size=n)) for n in lengths]
    pred = [draw(st.lists(TAG, min_size=n, max_size=n)) for n in lengths]
    return gold, pred


@settings(max_examples=400, deadline=None)
@given(paired_sequences())
def test_scores_equal_seqeval_on_random_sequences(pair: tuple) -> None:
    gold, pred = pair
    if not any(t != "O" for seq in gold + pred for t in seq):
        return  # seqeval's report is empty and undefined here; ours is all zeros
    assert_matches_seqeval(gold, pred)


def test_scores_equal_seqeval_on_benchmark_files(benchmark_data: Benchmark) -> None:
    """On gold files with I- starts, and predictions that mix OTHER and MISC."""
    rng = random.Random(0)
    types = ["PER", "LOC", "ORG", "OTHER", "MISC"]
    files = benchmark_data.files()
    assert len(files) == 5
    for path in files:
        gold = [ex.tags for ex in read_conll(path)]
        pred = []
        for tags in gold:
            noisy = list(tags)
            for i in range(len(noisy)):
                roll = rng.random()
                if roll < 0.05:
                    noisy[i] = "O"
                elif roll < 0.08:
                    noisy[i] = f"{rng.choice('BI')}-{rng.choice(types)}"
            pred.append(noisy)
        assert_matches_seqeval(gold, pred)


def test_empty_and_perfect_cases() -> None:
    assert score_entities([[]], [[]]).f1 == 0.0
    gold = [[Entity(0, 1, "PER")]]
    perfect = score_entities(gold, gold)
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)
    missed = score_entities(gold, [[]])
    assert (missed.recall, missed.predicted, missed.support) == (0.0, 0, 1)


def test_merge_equals_scoring_everything_at_once() -> None:
    gold = [[Entity(0, 1, "PER")], [Entity(1, 3, "LOC")], [Entity(0, 2, "ORG")]]
    pred = [[Entity(0, 1, "PER")], [Entity(1, 2, "LOC")], [Entity(0, 2, "ORG"), Entity(3, 4, "X")]]
    a, b = EntityScorer(), EntityScorer()
    a.update(gold[0], pred[0])
    for g, p in zip(gold[1:], pred[1:], strict=True):
        b.update(g, p)
    a.merge(EntityScorer.from_counts(b.counts()))
    assert a.result() == score_entities(gold, pred)
