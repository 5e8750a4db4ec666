"""``smner score``: entity-level scores of a prediction file against a gold file."""

from __future__ import annotations

import argparse

from smner.commands import (
    add_alias_option,
    add_errors_option,
    add_input_limit_option,
    parse_aliases,
    print_scores,
)
from smner.data.conll import Corpus
from smner.data.mnermi import read_corpus
from smner.errors import SmnerError
from smner.evaluation.metrics import Scores, score_entities


def register(verbs: argparse._SubParsersAction) -> None:
    score = verbs.add_parser(
        "score",
        help="score a prediction file against a gold file",
        description="Entity-level micro precision, recall and F1 (exact boundary and type) "
        "and per-type scores, identical to seqeval's default mode. Both files must hold the "
        "same posts with the same tokens.",
    )
    score.add_argument("--gold", required=True, metavar="FILE", help="gold data file")
    score.add_argument("--pred", required=True, metavar="FILE", help="predicted tags, same format")
    score.add_argument(
        "--json", action="store_true", help="print fractions in [0, 1] as one JSON object"
    )
    score.add_argument(
        "--boxes",
        metavar="DIR",
        help="gold boxes: <image id>.xml VOC files (grounded-NER data); with --pred-boxes, "
        "adds GMNER, MNER and EEG precision/recall/F1",
    )
    score.add_argument(
        "--pred-boxes",
        metavar="DIR",
        help="predicted boxes in the same layout ('smner evaluate --predicted-boxes DIR'); a "
        "predicted entity without a box is 'not in the image'",
    )
    add_errors_option(score)
    add_alias_option(score)
    add_input_limit_option(score)
    score.set_defaults(handler=run_score)


def check_aligned(gold: Corpus, pred: Corpus) -> None:
    """Both files must list the same posts with the same tokens; name both lines if not."""
    for g, p in zip(gold, pred, strict=False):
        if g.tokens != p.tokens:
            i = next(
                (k for k, (a, b) in enumerate(zip(g.tokens, p.tokens, strict=False)) if a != b),
                min(len(g), len(p)),
            )
            raise SmnerError(
                f"{gold.path}:{g.token_line(i)} and {pred.path}:{p.token_line(i)} "
                f"differ: posts must have the same tokens "
                f"(gold {len(g)} tokens, prediction {len(p)})"
            )
    if len(gold) != len(pred):
        raise SmnerError(
            f"{gold.path} has {len(gold)} posts but {pred.path} has {len(pred)}; "
            "expected the same posts in the same order"
        )


def read_aligned(
    gold_path: str,
    pred_path: str,
    aliases: dict[str, str] | None = None,
    max_bytes: int | None = None,
) -> tuple[Corpus, Corpus]:
    """The gold and predicted files, checked to hold the same posts and tokens."""
    gold = read_corpus(gold_path, aliases, max_bytes)
    pred = read_corpus(pred_path, aliases, max_bytes)
    check_aligned(gold, pred)
    return gold, pred


def score_files(
    gold_path: str,
    pred_path: str,
    aliases: dict[str, str] | None = None,
    max_bytes: int | None = None,
) -> Scores:
    gold, pred = read_aligned(gold_path, pred_path, aliases, max_bytes)
    return score_entities((ex.entities for ex in gold), (ex.entities for ex in pred))


def run_score(args: argparse.Namespace) -> int:
    from smner.evaluation.error_analysis import analyse, format_errors
    from smner.evaluation.grounding import format_grounding

    if bool(args.boxes) != bool(args.pred_boxes):
        raise SmnerError("--boxes and --pred-boxes go together (gold and predicted boxes)")
    aliases, max_bytes = parse_aliases(args.label_alias), args.max_input_mb * 2**20
    gold, pred = read_aligned(args.gold, args.pred, aliases, max_bytes)
    scores = score_entities((ex.entities for ex in gold), (ex.entities for ex in pred))
    grounding = errors = None
    if args.boxes:
        from smner.data.boxes import load_box_dir
        from smner.evaluation.grounding import score_box_files

        grounding = score_box_files(
            gold.examples,
            pred.examples,
            load_box_dir(args.boxes, gold.examples),
            load_box_dir(args.pred_boxes, pred.examples),
        )
    if args.errors:
        pairs = zip(gold, pred, strict=True)
        errors = analyse((g.tokens, g.entities, p.entities) for g, p in pairs)
    parts = [("grounding", grounding, format_grounding), ("errors", errors, format_errors)]
    print_scores(scores, parts, args.json)
    return 0
