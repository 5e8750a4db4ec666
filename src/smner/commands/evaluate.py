"""``smner evaluate``: score a saved model on a data file."""

from __future__ import annotations

import argparse
import sys

from smner.commands import (
    add_alias_option,
    add_errors_option,
    add_input_limit_option,
    add_model_option,
    add_quantize_option,
    model_folder,
    parse_aliases,
    positive_int,
    print_scores,
)
from smner.errors import SmnerError


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "evaluate",
        help="score a saved model on a data file",
        description="Predict on FILE with a saved model and print entity-level precision, "
        "recall and F1, overall and per type (the same numbers as 'smner score' on the "
        "predictions file). Gold entities the model cannot produce count as misses.",
    )
    add_model_option(parser)
    parser.add_argument("--data", required=True, metavar="FILE", help="gold data file")
    parser.add_argument("--images", metavar="DIR", help="folder holding <IMGID>.jpg files")
    parser.add_argument(
        "--boxes",
        metavar="DIR|FILE",
        help="where each entity is in its image: a folder of <image id>.xml Pascal VOC files "
        "(grounded-NER data, 'smner synth''s boxes/) or the meta.jsonl 'smner synth' writes. "
        "Adds the alignment scores of the model's attention (pointing accuracy, attention mass "
        "in the entity's box), the posts fully right by number of entities, and, for a model "
        "with a grounding head, GMNER, MNER and EEG precision/recall/F1",
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_errors_option(parser)
    parser.add_argument("--predictions", metavar="OUT", help="write predicted tags to OUT")
    parser.add_argument(
        "--predicted-boxes",
        metavar="DIR",
        help="write the predicted boxes (models with a grounding head) as <image id>.xml VOC "
        "files into DIR, the layout of grounded-NER data; 'smner score --pred-boxes DIR' "
        "scores them with the tags of --predictions",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_quantize_option(parser)
    parser.add_argument(
        "--span-pruning",
        type=int,
        metavar="N",
        help="send only each post's N spans the text finds likeliest through the span-to-"
        "region attention, the rest counted as non-entities (faster; 0: every span; default: "
        "the model's model.span_pruning). Measures what pruning costs before you ship it",
    )
    add_alias_option(parser)
    add_input_limit_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smner.data.conll import write_predictions
    from smner.evaluation.error_analysis import format_errors
    from smner.evaluation.evaluate import evaluate_saved_model
    from smner.evaluation.grounding import format_grounding
    from smner.evaluation.pointing import format_alignment
    from smner.predict.loop import resolve_device

    result = evaluate_saved_model(
        model_folder(args),
        args.data,
        args.images,
        parse_aliases(args.label_alias),
        args.batch_size,
        resolve_device(args.device),
        progress=sys.stderr.isatty(),
        max_file_bytes=args.max_input_mb * 2**20,
        quantize=args.quantize,
        span_pruning=args.span_pruning,
    )
    if result.image_summary:
        print(result.image_summary, file=sys.stderr)
    if args.predictions:
        write_predictions(
            args.predictions,
            result.corpus.examples,
            [[p.entity for p in post] for post in result.predictions],
            result.corpus.aliases,
        )
    if args.predicted_boxes:
        if not result.grounds:
            raise SmnerError("--predicted-boxes: this model has no grounding head, so no boxes")
        count = result.write_boxes(args.predicted_boxes)
        print(f"wrote {count} box files to {args.predicted_boxes}", file=sys.stderr)
    scores = result.scores
    alignment = grounding = None
    if args.boxes:
        alignment = result.alignment(args.boxes)
        if result.grounds:
            grounding = result.grounding(args.boxes)
    errors = None
    if args.errors:
        from smner.evaluation.error_analysis import analyse

        errors = analyse(
            (ex.tokens, ex.entities, [p.entity for p in post])
            for ex, post in zip(result.corpus.examples, result.predictions, strict=True)
        )
    parts = [
        ("alignment", alignment, format_alignment),
        ("grounding", grounding, format_grounding),
        ("errors", errors, format_errors),
    ]
    print_scores(scores, parts, args.json)
    return 0
