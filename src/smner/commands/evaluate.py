"""``smner evaluate``: score a saved model on a data file."""

from __future__ import annotations

import argparse
import json
import sys

from smner.commands import add_alias_option, parse_aliases


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "evaluate",
        help="score a saved model on a data file",
        description="Predict on FILE with a saved model and print entity-level precision, "
        "recall and F1, overall and per type (the same numbers as 'smner score' on the "
        "predictions file). Gold entities the model cannot produce count as misses.",
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="saved model folder")
    parser.add_argument("--data", required=True, metavar="FILE", help="gold data file")
    parser.add_argument("--images", metavar="DIR", help="folder holding <IMGID>.jpg files")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--predictions", metavar="OUT", help="write predicted tags to OUT")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_alias_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smner.data.conll import read_conll, write_predictions
    from smner.data.images import ImageStore
    from smner.encoders.text import load_tokenizer
    from smner.images_input import ImageProvider
    from smner.metrics import format_scores
    from smner.model import NERModel, build_collator
    from smner.model.base import TOKENIZER_DIR
    from smner.training import predict_examples, resolve_device, score_predictions

    corpus = read_conll(args.data, parse_aliases(args.label_alias))
    device = resolve_device(args.device)
    model = NERModel.from_pretrained(args.model).to(device)
    collator = build_collator(model.config, load_tokenizer(f"{args.model}/{TOKENIZER_DIR}"))
    store = ImageStore(args.images)
    images = ImageProvider(model, corpus.examples, store, progress=sys.stderr.isatty())
    if images.enabled:
        print(store.summary(), file=sys.stderr)
    predictions = predict_examples(
        model, collator, corpus.examples, images, args.batch_size, device, sys.stderr.isatty()
    )
    scores = score_predictions(corpus.examples, predictions)
    if args.predictions:
        write_predictions(
            args.predictions,
            corpus.examples,
            [[p.entity for p in post] for post in predictions],
            corpus.aliases,
        )
    print(json.dumps(scores.to_dict(), indent=2) if args.json else format_scores(scores))
    return 0
