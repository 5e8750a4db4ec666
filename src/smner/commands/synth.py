"""``smner synth``: write the synthetic corpus whose entity types only the images show (unless
its knobs make the text tell them too, or make the images lie)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from smner.synth.corpus import generate_corpus
from smner.synth.knobs import (
    MIN_IMAGE_SIZE,
    MIN_POSTS,
    REALISTIC,
    TWO_ENTITY_DEFAULT,
    parse_cue_size,
)
from smner.synth.multi_image import MAX_IMAGES_PER_POST, parse_images_per_post

#: The knobs beyond noise and ungroundable: option, destination, default, and help. Their
#: defaults are applied in :func:`knob_settings`, so that ``--realistic`` can tell an option
#: that was given from one that was not.
_KNOBS: tuple[tuple[str, str, Any, str], ...] = (
    (
        "--text-cues",
        "text_cues",
        0.0,
        "share of posts with entities, 0 to 1, whose words tell each entity's type (\"coach "
        'X", "flights to X", "shares of X", "the new X phone") while the image still shows '
        "its cue, so that a model can read the type from the text (meta.jsonl: text_cue, hints)",
    ),
    (
        "--unrelated",
        "unrelated",
        0.0,
        "share of posts, 0 to 1, whose image is a scene of distractors with no cue of any type; "
        "their entities have no box. Disjoint from --noise: the two add up to at most 1 "
        '(meta.jsonl: image is "own", "mismatched" or "unrelated")',
    ),
    (
        "--two-entity",
        "two_entity",
        TWO_ENTITY_DEFAULT,
        "share of posts with two entities, 0 to 0.9; 10%% have none and the rest one",
    ),
    (
        "--position-words",
        "position_words",
        0.0,
        "share of two-entity posts with their own image, 0 to 1, whose text says where each "
        'entity is ("X on the left , Y in the top right"); their cues are anywhere inside the '
        "regions named, which never overlap. Other two-entity posts keep the first-mentioned "
        "entity's cue in the left half and the second's in the right "
        "(meta.jsonl: position_words, positions)",
    ),
    (
        "--cue-size",
        "cue_size",
        None,
        "LO-HI, e.g. 0.3-0.5: the longer side of a cue box as a share of the image side (of "
        "its half on two-cue images without position words; at most the region named with "
        "them), so that pointing must find the cue rather than pick a side (default: 0.45-0.9 "
        "for one cue, 0.6-0.96 of the half for two)",
    ),
    (
        "--distractors",
        "distractors",
        0.0,
        "share of posts, 0 to 1, not counting unrelated ones, whose image gets an extra object "
        "that shows no entity type (a ball, a tree, a cloud), clear of every cue; listed in "
        "meta.jsonl (distractors), never in boxes/",
    ),
)


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
        "of the posts, in the benchmark format), OUTPUT/images/<id>.jpg, OUTPUT/boxes/<id>.xml "
        "(each entity's cue box, VOC XML) and OUTPUT/meta.jsonl (the labels and the drawn cue "
        "boxes of every post; boxes are for scoring only). Needs no download; the same "
        "arguments write byte-identical files. The knobs from --text-cues on make a corpus "
        "that tests each module: text that tells the type against images that lie (the "
        "bottleneck), small cues anywhere and distractors (the cross-modal attention). With "
        "any of them away from its default, each meta.jsonl record also says which apply to "
        "its post: image, text_cue and hints (per entity), position_words and positions, "
        "distractors (kind and box); at their defaults the corpus is that of earlier versions.",
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
        default=None,
        metavar="P",
        help="share of posts, 0 to 1, whose image shows cues of other types than their "
        "entities (a mismatched image; labels stay those of the text; default: 0, "
        f"{REALISTIC['noise']} with --realistic)",
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
    parser.add_argument(
        "--images-per-post",
        default="1",
        metavar="K",
        help=f"images of each post, 1 to {MAX_IMAGES_PER_POST}. With K > 1 a post names K "
        "images <id>_0 .. <id>_{K-1} on its IMGID line (separated by spaces); each entity's cue "
        "is drawn alone in one of them, anywhere (inside the region its position words name, "
        "if any; --cue-size of the image side), and the "
        "first-mentioned entity's cue in a lower-indexed image than the second's; the other "
        "images show scenery of no type (a ball, a tree, a cloud) or an empty background. A "
        "mismatched post's images show the cues of another post's types, an unrelated post's "
        "are all scenery. boxes/ holds one file per image (its cues, in its pixels); each "
        "meta.jsonl record adds image_ids, image_index per cue (and per distractor) and "
        "scenery. Texts and labels are those of K = 1 (default: %(default)s)",
    )
    for option, dest, default, text in _KNOBS:
        parser.add_argument(
            option,
            dest=dest,
            type=str if dest == "cue_size" else float,
            default=None,
            metavar="LO-HI" if dest == "cue_size" else "P",
            help=text + _default_note(dest, default),
        )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="a preset for a corpus where text and image each tell part of the story: "
        + ", ".join(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in REALISTIC.items())
        + "; options given with it override it",
    )
    parser.set_defaults(handler=run)


def _default_note(dest: str, default: Any) -> str:
    """ " (default: X; Y with --realistic)", as far as there is a default and a preset."""
    parts = [] if default is None else [f"default: {_shown(default)}"]
    if dest in REALISTIC:
        parts.append(f"{_shown(REALISTIC[dest])} with --realistic")
    return f" ({'; '.join(parts)})" if parts else ""


def _shown(value: Any) -> str:
    """A preset value as it is written on the command line."""
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


def knob_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The noise and knob arguments of :func:`generate_corpus`: each option given, else the
    ``--realistic`` preset's value, else the default; the cue size parsed from ``LO-HI``."""
    defaults = {"noise": 0.0, **{dest: default for _, dest, default, _ in _KNOBS}}
    settings: dict[str, Any] = {}
    for name, default in defaults.items():
        value = getattr(args, name)
        if value is None:
            value = REALISTIC.get(name, default) if args.realistic else default
        elif name == "cue_size":
            value = parse_cue_size(value)
        settings[name] = value
    return settings


def run(args: argparse.Namespace) -> int:
    """Generate the corpus; bad arguments raise SmnerError before anything is written."""
    summary = generate_corpus(
        Path(args.output),
        posts=args.posts,
        seed=args.seed,
        image_size=args.image_size,
        ungroundable=args.ungroundable,
        progress=sys.stderr.isatty(),
        images_per_post=parse_images_per_post(args.images_per_post),
        **knob_settings(args),
    )
    print(summary.format())
    return 0
