"""The error classes against hand-worked posts, and their sums against the scorer's counts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from smner.cli import main
from smner.data.types import Entity
from smner.evaluation.error_analysis import analyse, classify, entity_form, format_errors
from smner.evaluation.metrics import score_entities

GOLD = [Entity(0, 2, "PER"), Entity(4, 5, "LOC")]


@pytest.mark.parametrize(
    ("predicted", "kind"),
    [
        (Entity(0, 2, "PER"), None),  # right
        (Entity(0, 2, "ORG"), "type"),  # the gold span, another type
        (Entity(1, 2, "PER"), "boundary"),  # inside a PER, too short
        (Entity(3, 5, "LOC"), "boundary"),  # one word too many on the left
        (Entity(1, 3, "ORG"), "boundary and type"),
        (Entity(2, 4, "PER"), "spurious"),  # between the gold entities: touches neither
        (Entity(5, 6, "LOC"), "spurious"),
    ],
)
def test_each_wrong_prediction_has_one_class(predicted: Entity, kind: str | None) -> None:
    assert classify(predicted, GOLD) == kind


def test_a_worked_post() -> None:
    tokens = ["Barack", "Obama", "in", "#Paris", "with", "@UN"]
    gold = [Entity(0, 2, "PER"), Entity(3, 4, "LOC"), Entity(5, 6, "ORG")]
    predicted = [Entity(1, 2, "PER"), Entity(3, 4, "ORG"), Entity(2, 3, "LOC")]
    d = analyse([(tokens, gold, predicted)]).to_dict()
    assert d["false_positives"] == {
        "type": 1,
        "boundary": 1,
        "boundary and type": 0,
        "spurious": 1,
    }
    assert d["missed"] == 1  # @UN: nothing predicted over it
    assert d["type_confusions"] == [{"gold": "LOC", "predicted": "ORG", "count": 1}]
    assert d["recall_by_length"] == {
        "1": {"gold": 2, "recall": 0.0},
        "2": {"gold": 1, "recall": 0.0},
    }
    assert set(d["recall_by_form"]) == {"words", "#hashtag", "@mention"}
    assert (entity_form(tokens, gold[1]), entity_form(tokens, gold[2])) == (
        "#hashtag",
        "@mention",
    )
    text = format_errors(analyse([(tokens, gold, predicted)]))
    assert "type 1, boundary 1, boundary and type 0, spurious 1" in text
    assert "LOC -> ORG 1" in text


def test_the_classes_add_up_to_the_scorers_false_positives() -> None:
    rng = random.Random(0)

    def entities(length: int) -> list[Entity]:
        out: list[Entity] = []
        start = rng.randint(0, 2)
        while start < length:
            end = min(length, start + rng.randint(1, 3))
            if rng.random() < 0.5:
                out.append(Entity(start, end, rng.choice(["PER", "LOC", "ORG"])))
            start = end + rng.randint(0, 2)
        return out

    posts = []
    for _ in range(300):
        length = rng.randint(3, 12)
        posts.append((["w"] * length, entities(length), entities(length)))
    analysis = analyse(posts).to_dict()
    scores = score_entities((g for _, g, _ in posts), (p for _, _, p in posts))
    true_positives = round(scores.recall * scores.support)
    assert sum(analysis["false_positives"].values()) == scores.predicted - true_positives
    # Missed entities are false negatives nothing overlaps; the rest of the false negatives
    # are overlapped by some wrong prediction.
    overlapped = sum(
        1
        for _, gold, pred in posts
        for g in gold
        if g not in pred and any(p.start < g.end and g.start < p.end for p in pred)
    )
    assert analysis["missed"] + overlapped == scores.support - true_positives
    found = sum(v["recall"] * v["gold"] for v in analysis["recall_by_length"].values())
    assert round(found) == true_positives


def test_score_errors_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold = tmp_path / "gold.txt"
    pred = tmp_path / "pred.txt"
    gold.write_text("IMGID:1\nBarack\tB-PER\nObama\tI-PER\nin\tO\n#Paris\tB-LOC\n\n")
    pred.write_text("IMGID:1\nBarack\tO\nObama\tB-PER\nin\tO\n#Paris\tB-ORG\n\n")
    assert main(["score", "--gold", str(gold), "--pred", str(pred), "--errors", "--json"]) == 0
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert errors["false_positives"]["boundary"] == 1
    assert errors["false_positives"]["type"] == 1
    assert errors["recall_by_form"]["#hashtag"] == {"gold": 1, "recall": 0.0}
    assert main(["score", "--gold", str(gold), "--pred", str(pred), "--errors"]) == 0
    assert "recall by form" in capsys.readouterr().out
