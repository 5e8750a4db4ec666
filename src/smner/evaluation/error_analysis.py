"""Where a model's entity errors are: each wrong prediction and each missed gold entity put in
one class, the type confusions of exactly found spans, and recall by entity length and form.

An entity-level F1 says how many errors there are, not which. The classes follow the usual
MUC-style reading of span errors: a predicted span that matches a gold span but not its type
is a *type* error; one that overlaps a gold entity of its type with other boundaries a
*boundary* error; one that overlaps only entities of other types *boundary and type*; one that
touches no gold entity *spurious*. A gold entity no prediction overlaps is *missed*. Each
wrong prediction is counted once, so the classes add up to the false positives, and the
missed ones with the gold entities the wrong predictions overlap make up the false negatives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smner.data.types import Entity

#: false-positive classes, in the order reports list them
ERROR_CLASSES = ("type", "boundary", "boundary and type", "spurious")
#: entity lengths in words, the last bucket open-ended
LENGTH_BUCKETS = ("1", "2", "3", "4+")


def _overlaps(a: Entity, b: Entity) -> bool:
    return a.start < b.end and b.start < a.end


def classify(predicted: Entity, gold: Iterable[Entity]) -> str | None:
    """The error class of one predicted entity against a post's gold entities (None: right)."""
    overlapping = [g for g in gold if _overlaps(g, predicted)]
    if predicted in overlapping:
        return None
    if any((g.start, g.end) == (predicted.start, predicted.end) for g in overlapping):
        return "type"
    if any(g.type == predicted.type for g in overlapping):
        return "boundary"
    return "boundary and type" if overlapping else "spurious"


def entity_form(tokens: Sequence[str], entity: Entity) -> str:
    """How an entity is written: a hashtag, an @-mention, or plain words."""
    first = tokens[entity.start]
    if first.startswith("#"):
        return "#hashtag"
    if first.startswith("@"):
        return "@mention"
    return "words"


def length_bucket(entity: Entity) -> str:
    return LENGTH_BUCKETS[min(entity.length, len(LENGTH_BUCKETS)) - 1]


@dataclass
class ErrorAnalysis:
    """Counts over a corpus; :meth:`update` adds one post."""

    #: false positives by class (see the module docstring)
    wrong: Counter[str] = field(default_factory=Counter)
    #: gold entities no prediction overlaps
    missed: int = 0
    #: exactly found spans typed wrong: (gold type, predicted type) -> count
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: gold entities and the ones found exactly, by length and by form
    gold_by_length: Counter[str] = field(default_factory=Counter)
    found_by_length: Counter[str] = field(default_factory=Counter)
    gold_by_form: Counter[str] = field(default_factory=Counter)
    found_by_form: Counter[str] = field(default_factory=Counter)

    def update(
        self, tokens: Sequence[str], gold: Iterable[Entity], predicted: Iterable[Entity]
    ) -> None:
        gold_set, predicted_set = set(gold), set(predicted)
        for p in predicted_set:
            kind = classify(p, gold_set)
            if kind is None:
                continue
            self.wrong[kind] += 1
            if kind == "type":
                g = next(g for g in gold_set if (g.start, g.end) == (p.start, p.end))
                self.confusions[(g.type, p.type)] += 1
        for g in gold_set:
            if not any(_overlaps(g, p) for p in predicted_set):
                self.missed += 1
            length, form = length_bucket(g), entity_form(tokens, g)
            self.gold_by_length[length] += 1
            self.gold_by_form[form] += 1
            if g in predicted_set:
                self.found_by_length[length] += 1
                self.found_by_form[form] += 1

    def to_dict(self) -> dict[str, Any]:
        def recall(gold: Counter[str], found: Counter[str], keys: Iterable[str]) -> dict:
            return {
                k: {"gold": gold[k], "recall": found[k] / gold[k] if gold[k] else 0.0}
                for k in keys
                if gold[k]
            }

        return {
            "false_positives": {k: self.wrong[k] for k in ERROR_CLASSES},
            "missed": self.missed,
            "type_confusions": [
                {"gold": g, "predicted": p, "count": n}
                for (g, p), n in sorted(self.confusions.items(), key=lambda kv: -kv[1])
            ],
            "recall_by_length": recall(self.gold_by_length, self.found_by_length, LENGTH_BUCKETS),
            "recall_by_form": recall(
                self.gold_by_form, self.found_by_form, ("words", "#hashtag", "@mention")
            ),
        }


def analyse(
    posts: Iterable[tuple[Sequence[str], Iterable[Entity], Iterable[Entity]]],
) -> ErrorAnalysis:
    """The analysis of ``(tokens, gold, predicted)`` posts."""
    analysis = ErrorAnalysis()
    for tokens, gold, predicted in posts:
        analysis.update(tokens, gold, predicted)
    return analysis


def format_errors(analysis: ErrorAnalysis) -> str:
    """The analysis as the lines ``smner evaluate --errors`` prints under the scores."""
    d = analysis.to_dict()
    fp = d["false_positives"]
    lines = [
        "errors: wrong predictions "
        + ", ".join(f"{k} {fp[k]}" for k in ERROR_CLASSES)
        + f"; gold entities missed (nothing predicted over them) {d['missed']}"
    ]
    if d["type_confusions"]:
        top = d["type_confusions"][:6]
        lines.append(
            "  types confused (gold -> predicted): "
            + ", ".join(f"{c['gold']} -> {c['predicted']} {c['count']}" for c in top)
        )
    for key, title in (("recall_by_length", "words"), ("recall_by_form", "form")):
        cells = [f"{k}: {100 * v['recall']:.1f} ({v['gold']})" for k, v in d[key].items()]
        lines.append(f"  recall by {title}: " + ", ".join(cells))
    return "\n".join(lines)
