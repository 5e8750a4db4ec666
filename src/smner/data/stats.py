"""Corpus statistics for ``smner data stats``: what a reader needs to know before training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from smner.data.conll import Corpus
from smner.data.spans import count_i_starts


def corpus_stats(corpus: Corpus, max_span_width: int) -> dict[str, Any]:
    """Counts for one file; entities are counted as seqeval counts them."""
    per_type: Counter[str] = Counter()
    lengths: Counter[int] = Counter()
    i_starts = 0
    for example in corpus:
        per_type.update(e.type for e in example.entities)
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


def box_stats(corpus: Corpus, box_dir: str | Path) -> dict[str, Any]:
    """How many entities have a box in ``box_dir`` (VOC XML, see :mod:`smner.data.boxes`), and
    how many boxes each of those has."""
    from smner.data.boxes import load_box_dir

    boxes = load_box_dir(box_dir, corpus.examples)
    per_entity: Counter[int] = Counter()
    groundable = 0
    for example in corpus:
        own = boxes.get(example.image_id, {}) if example.image_id else {}
        for entity in example.entities:
            count = len(own.get(entity, []))
            groundable += count > 0
            per_entity[count] += 1
    total = sum(per_entity.values())
    return {
        "box_dir": str(box_dir),
        "posts_with_box_file": sum(1 for ex in corpus if ex.image_id in boxes),
        "groundable_entities": groundable,
        "groundable_share": groundable / total if total else 0.0,
        "boxes_per_entity": {str(k): v for k, v in sorted(per_entity.items())},
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
            *_box_lines(stats.get("boxes")),
        ]
    )


def _box_lines(boxes: dict[str, Any] | None) -> list[str]:
    if boxes is None:
        return []
    per = ", ".join(f"{k}: {v}" for k, v in boxes["boxes_per_entity"].items()) or "none"
    return [
        f"  posts with a box file {boxes['posts_with_box_file']} ({boxes['box_dir']})",
        f"  groundable entities   {boxes['groundable_entities']} "
        f"({100 * boxes['groundable_share']:.1f}%)",
        f"  boxes per entity      {per}",
    ]
