"""``smner synth``: write the synthetic corpus whose entity types only the images show."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smner.synth.corpus import MIN_IMAGE_SIZE, MIN_POSTS, generate_corpus


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "synth",
        help="generate a small multimodal corpus that needs the images (offline demo)",
        description="Generate a synthetic corpus of tweet-like posts with drawn photos. Every "
        "name is used as every type (PER, LOC, ORG, MISC) equally often in type-neutral "
        "sentences, so the text shows where the entities are but not their types; the photo "
        "of each post shows one drawn cue per entity (a person, a landscape or map, a "
        "storefront or logo, a product), the first-mentioned entity's on the left and the "
        "second's on the right. A multimodal model should therefore beat its text-only "
        "ablation by a wide margin. Writes OUTPUT/train.txt, valid.txt and test.txt (70/15/15 "
        "of the posts, in the benchmark format), OUTPUT/images/<id>.jpg, and OUTPUT/meta.jsonl "
        "(the labels and the drawn cue boxes of every post). Needs no download; the same "
        "arguments write byte-identical files.",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument(
        "--posts",
        type=int,
        default=1200,
        metavar="N",
        help=f"number of posts over all splits, at least {MIN_POSTS} (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="P",
        help="share of posts, 0 to 1, whose image shows cues of other types than their "
        "entities (labels stay those of the text; default: %(default)s)",
    )
    parser.add_argument(
        "--ungroundable",
        type=float,
        default=0.0,
        metavar="P",
        help="share of entities, 0 to 1, whose cue is left out of the image; the text names "
        'their type instead ("the town of ..."), and their box file lists no box for them: '
        "data for grounded NER, where some entities are not in the picture "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=224,
        metavar="PX",
        help=f"side of the square images in pixels, at least {MIN_IMAGE_SIZE} "
        "(default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate the corpus; bad arguments raise SmnerError before anything is written."""
    summary = generate_corpus(
        Path(args.output),
        posts=args.posts,
        seed=args.seed,
        noise=args.noise,
        image_size=args.image_size,
        ungroundable=args.ungroundable,
        progress=sys.stderr.isatty(),
    )
    print(summary.format())
    return 0
