"""``smner score``: entity-level scores of a prediction file against a gold file."""

from __future__ import annotations

import argparse

from smner.commands import (
    add_alias_option,
    add_input_limit_option,
    parse_aliases,
    print_scores,
)
from smner.data.conll import Corpus, read_conll
from smner.errors import SmnerError
from smner.metrics import Scores, score_entities


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


def score_files(
    gold_path: str,
    pred_path: str,
    aliases: dict[str, str] | None = None,
    max_bytes: int | None = None,
) -> Scores:
    gold = read_conll(gold_path, aliases, max_bytes)
    pred = read_conll(pred_path, aliases, max_bytes)
    check_aligned(gold, pred)
    return score_entities((ex.entities for ex in gold), (ex.entities for ex in pred))


def run_score(args: argparse.Namespace) -> int:
    if bool(args.boxes) != bool(args.pred_boxes):
        raise SmnerError("--boxes and --pred-boxes go together (gold and predicted boxes)")
    aliases, max_bytes = parse_aliases(args.label_alias), args.max_input_mb * 2**20
    scores = score_files(args.gold, args.pred, aliases, max_bytes)
    grounding = None
    if args.boxes:
        from smner.data.boxes import load_box_dir
        from smner.grounding import score_box_files

        gold = read_conll(args.gold, aliases, max_bytes).examples
        pred = read_conll(args.pred, aliases, max_bytes).examples
        grounding = score_box_files(
            gold, pred, load_box_dir(args.boxes, gold), load_box_dir(args.pred_boxes, pred)
        )
    from smner.grounding import format_grounding

    print_scores(scores, [("grounding", grounding, format_grounding)], args.json)
    return 0
