"""Entity-level scoring: micro precision/recall/F1 with exact boundary and type match.

The numbers are those of seqeval's default mode (and conlleval) on BIO sequences. Every gold
entity counts, including those a span model cannot produce because they exceed its width
limit: such an entity is a miss, never removed from the denominator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from smner.data.types import Entity


def _safe_div(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _safe_div(2 * precision * recall, precision + recall)


@dataclass(frozen=True, slots=True)
class TypeScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Scores:
    """Overall and per-type scores; ``support`` is the number of gold entities."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int
    per_type: dict[str, TypeScores] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The JSON schema shared by ``smner score`` and ``smner evaluate``."""
        return asdict(self)


class EntityScorer:
    """Accumulates gold and predicted entities post by post, then reports scores."""

    def __init__(self) -> None:
        self._correct: Counter[str] = Counter()
        self._gold: Counter[str] = Counter()
        self._predicted: Counter[str] = Counter()

    def update(self, gold: Iterable[Entity], predicted: Iterable[Entity]) -> None:
        """Add one post's entities (sets: a duplicated prediction counts once, as in seqeval)."""
        gold_set = set(gold)
        predicted_set = set(predicted)
        self._gold.update(e.type for e in gold_set)
        self._predicted.update(e.type for e in predicted_set)
        self._correct.update(e.type for e in gold_set & predicted_set)

    def merge(self, other: EntityScorer) -> None:
        """Add the counts of another scorer (e.g. one per process in distributed evaluation)."""
        self._correct.update(other._correct)
        self._gold.update(other._gold)
        self._predicted.update(other._predicted)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "correct": dict(self._correct),
            "gold": dict(self._gold),
            "predicted": dict(self._predicted),
        }

    @classmethod
    def from_counts(cls, counts: dict[str, dict[str, int]]) -> EntityScorer:
        scorer = cls()
        scorer._correct.update(counts["correct"])
        scorer._gold.update(counts["gold"])
        scorer._predicted.update(counts["predicted"])
        return scorer

    def result(self) -> Scores:
        per_type: dict[str, TypeScores] = {}
        for label in sorted(set(self._gold) | set(self._predicted)):
            p = _safe_div(self._correct[label], self._predicted[label])
            r = _safe_div(self._correct[label], self._gold[label])
            per_type[label] = TypeScores(p, r, _f1(p, r), self._gold[label])
        correct = sum(self._correct.values())
        gold = sum(self._gold.values())
        predicted = sum(self._predicted.values())
        p = _safe_div(correct, predicted)
        r = _safe_div(correct, gold)
        return Scores(p, r, _f1(p, r), gold, predicted, per_type)


def score_entities(
    gold: Iterable[Iterable[Entity]], predicted: Iterable[Iterable[Entity]]
) -> Scores:
    """Score paired per-post entity lists."""
    scorer = EntityScorer()
    for g, p in zip(gold, predicted, strict=True):
        scorer.update(g, p)
    return scorer.result()


def format_prf(scores: Scores) -> str:
    """One line of overall P/R/F1 in percent, as the training log prints them."""
    return f"P {100 * scores.precision:.2f} R {100 * scores.recall:.2f} F1 {100 * scores.f1:.2f}"


def format_scores(scores: Scores) -> str:
    """A fixed-width table: overall and per type, as percentages."""
    rows = [f"{'':<8}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label, s in scores.per_type.items():
        rows.append(
            f"{label:<8}{100 * s.precision:>10.2f}{100 * s.recall:>10.2f}"
            f"{100 * s.f1:>10.2f}{s.support:>10d}"
        )
    rows.append(
        f"{'overall':<8}{100 * scores.precision:>10.2f}{100 * scores.recall:>10.2f}"
        f"{100 * scores.f1:>10.2f}{scores.support:>10d}"
    )
    return "\n".join(rows)
