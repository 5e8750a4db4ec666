"""Corpus statistics for ``smner data stats``: what a reader needs to know before training."""

from __future__ import annotations

from collections import Counter
from typing import Any

from smner.data.conll import Corpus
from smner.spans import count_i_starts


def corpus_stats(corpus: Corpus, max_span_width: int) -> dict[str, Any]:
    """Counts for one file; entities are counted as seqeval counts them."""
    per_type: Counter[str] = Counter()
    lengths: Counter[int] = Counter()
    i_starts = 0
    for example in corpus:
        per_type.update(e.label for e in example.entities)
        lengths.update(e.length for e in example.entities)
        if example.tags is not None:
            i_starts += count_i_starts(example.tags, example.entities)
    return {
        "path": corpus.path,
        "posts": len(corpus),
        "tokens": sum(len(ex) for ex in corpus),
        "entities": dict(sorted(per_type.items())),
        "entities_total": sum(per_type.values()),
        "i_starts": i_starts,
        "length_histogram": {str(k): v for k, v in sorted(lengths.items())},
        "max_span_width": max_span_width,
        "longer_than_max_width": sum(v for k, v in lengths.items() if k > max_span_width),
        "posts_with_image_id": sum(1 for ex in corpus if ex.image_id is not None),
        "max_post_tokens": max((len(ex) for ex in corpus), default=0),
    }


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`corpus_stats`."""
    types = ", ".join(f"{k} {v}" for k, v in stats["entities"].items()) or "none"
    hist = ", ".join(f"{k}: {v}" for k, v in stats["length_histogram"].items()) or "none"
    return "\n".join(
        [
            f"{stats['path']}",
            f"  posts                 {stats['posts']}",
            f"  posts with image id   {stats['posts_with_image_id']}",
            f"  tokens                {stats['tokens']}",
            f"  longest post          {stats['max_post_tokens']} tokens",
            f"  entities              {stats['entities_total']} ({types})",
            f"  entities starting I-  {stats['i_starts']}",
            f"  entity lengths        {hist}",
            f"  longer than {stats['max_span_width']:<10d}{stats['longer_than_max_width']}",
        ]
    )
