"""``smner predict``: entities of new posts, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smner.commands import add_input_limit_option, add_model_option, model_folder, positive_int
from smner.errors import DataFormatError, SmnerError
from smner.inputs import PostInput, read_jsonl

if TYPE_CHECKING:
    from smner.predict import PostPrediction


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "predict",
        help="find entities in new posts",
        description="Find entities in one post (--text, optionally --image) or in a JSONL file "
        'of records {"id", "text" or "tokens", "image" (optional path)}. Raw text is split '
        'by a tweet-aware tokenizer. Output records add "entities": [{text, type, start, end, '
        "char_start, char_end, score}] (token ends and character ends are exclusive). An "
        '"image" path in a JSONL record is read relative to the JSONL file\'s folder, unless '
        "it is absolute; images that are not found are counted in one warning.",
        epilog="examples:\n"
        "  smner predict --model runs/t17/best --text 'Kevin Durant joins the Warriors'\n"
        "  echo 'George visited Paris' | smner predict --model runs/t17/best --text - "
        "--format table\n"
        "  smner predict --model org/name --input posts.jsonl --output out.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--text", help="the text of one post; '-' reads posts from stdin, one per line"
    )
    source.add_argument("--input", metavar="FILE.jsonl", help="one JSON record per line")
    add_model_option(parser)
    parser.add_argument("--image", metavar="PATH", help="image of the --text post")
    parser.add_argument(
        "--output", metavar="FILE", help="write the predictions here (default: stdout)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="jsonl: one record per post (default); conll: token<TAB>BIO tag, a blank line "
        "between posts; table: one row per entity, for reading in a terminal",
    )
    parser.add_argument(
        "--explain", action="store_true", help="add each entity's attention over the image grid"
    )
    parser.add_argument(
        "--heatmaps", metavar="DIR", help="save one PNG per entity: its attention over its image"
    )
    parser.add_argument("--batch-size", type=positive_int, default=32)
    add_input_limit_option(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.set_defaults(handler=run)


FORMATS = ("jsonl", "conll", "table")


def read_posts(
    path: str, check: Callable[[PostInput], object] | None = None, max_bytes: int | None = None
) -> list[PostInput]:
    """The posts of a JSONL file; a bad one, or one ``check`` refuses, names its line.

    ``check`` raises :class:`SmnerError` for a post the model cannot take (no tokens, too
    many), so that such a post stops the run before anything is predicted or written.
    """
    posts = []
    for number, post in read_jsonl(path, max_bytes):
        if check is not None:
            try:
                check(post)
            except SmnerError as exc:
                raise DataFormatError(path, number, str(exc)) from None
        posts.append(post)
    return posts


def _stdin_posts(image: str | None) -> list[PostInput]:
    lines = [line.strip() for line in sys.stdin.read().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise SmnerError("--text -: no text on stdin (one post per line)")
    if image and len(lines) > 1:
        raise SmnerError(f"--image goes with one post; stdin holds {len(lines)} lines")
    return [PostInput(text=t, id=str(n), image=image) for n, t in enumerate(lines, start=1)]


def run(args: argparse.Namespace) -> int:
    from smner.predict import Predictor

    if args.heatmaps:  # checked now: a bad folder must not cost the predictions
        heatmaps = Path(args.heatmaps)
        if heatmaps.exists() and not heatmaps.is_dir():
            raise SmnerError(f"--heatmaps {args.heatmaps}: exists and is not a folder")
        parent = next((p for p in [heatmaps, *heatmaps.parents] if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise SmnerError(f"--heatmaps {args.heatmaps}: {parent} is not a folder")
    predictor = Predictor.from_pretrained(model_folder(args), device=args.device)
    if args.input is not None:
        if args.image:
            raise SmnerError('--image goes with --text; in --input records use "image"')
        posts = read_posts(args.input, predictor.tokenize, args.max_input_mb * 2**20)
    elif args.text == "-":
        posts = _stdin_posts(args.image)
        for post in posts:
            predictor.tokenize(post)
    else:
        posts = [PostInput(text=args.text, image=args.image, id="1")]
    predictions = predictor.predict_many(posts, args.batch_size)
    warn_about_images(posts, predictions, args.input)
    if args.format == "jsonl":
        lines = [
            json.dumps(p.to_dict(explain=args.explain), ensure_ascii=False) for p in predictions
        ]
        text = "\n".join(lines) + "\n"
    elif args.format == "conll":
        text = format_conll_predictions(predictions)
    else:
        text = format_table(predictions)
    if args.heatmaps:
        for post, prediction in zip(posts, predictions, strict=True):
            draw_post_heatmaps(Path(args.heatmaps), post, prediction, predictor)
    if args.output:
        from smner.fileio import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _named_image(post: PostInput) -> str | None:
    """The image path as the input wrote it (None for no image, or bytes)."""
    if not isinstance(post.image, str | Path):
        return None
    return str(post.image)


def warn_about_images(
    posts: Sequence[PostInput], predictions: Sequence[PostPrediction], source: str | None
) -> None:
    """One warning line for images named in the input that were not found (and one for those
    found but not usable), with the count and the first path."""
    named = [
        (Path(str(post.image)), prediction.image_status)
        for post, prediction in zip(posts, predictions, strict=True)
        if _named_image(post) is not None
    ]
    if not named:
        return
    where = f" in {source}" if source else ""
    rule = ""
    if source:
        folder = Path(source).parent.resolve()
        rule = f"; relative image paths are read from the JSONL file's folder, {folder}"
    missing = [path for path, status in named if status == "missing"]
    if missing:
        print(
            f"smner: warning: {len(missing)} of {len(named)} images named{where} were not "
            f"found (first: {missing[0]}){rule}; those posts were predicted without an image",
            file=sys.stderr,
        )
    unusable = [(p, s) for p, s in named if s not in ("missing", "ok", "ignored (text-only model)")]
    if unusable:
        path, status = unusable[0]
        print(
            f"smner: warning: {len(unusable)} of {len(named)} images named{where} could not be "
            f"used (first: {path}, {status}); those posts were predicted without an image",
            file=sys.stderr,
        )


def format_conll_predictions(predictions: Sequence[PostPrediction]) -> str:
    """Token<TAB>BIO tag lines, a blank line between posts, in input order."""
    from smner.data.types import Entity
    from smner.spans import entities_to_bio

    blocks = []
    for prediction in predictions:
        spans = [Entity(m.start, m.end, m.type) for m in prediction.entities]
        tags = entities_to_bio(spans, len(prediction.tokens))
        blocks.append(
            "".join(f"{t}\t{tag}\n" for t, tag in zip(prediction.tokens, tags, strict=True))
        )
    return "\n".join(blocks) + "\n" if blocks else ""


def format_table(predictions: Sequence[PostPrediction]) -> str:
    """One row per entity (a dash row for a post without any), columns aligned."""
    header = ("post", "entity", "type", "tokens", "score", "image")
    rows = []
    for n, prediction in enumerate(predictions, start=1):
        post_id = str(prediction.id if prediction.id is not None else n)
        if not prediction.entities:
            rows.append((post_id, "-", "-", "-", "-", prediction.image_status))
        for m in prediction.entities:
            span = f"{m.start}-{m.end}"
            rows.append((post_id, m.text, m.type, span, f"{m.score:.2f}", prediction.image_status))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


def draw_post_heatmaps(
    folder: Path, post: PostInput, prediction: PostPrediction, predictor: Any
) -> None:
    """The post's heatmaps, or one line saying why none was drawn."""
    post_id = str(post.id)
    reason = None
    if not prediction.entities:
        reason = "no entities found"
    elif prediction.image_status == "no image":
        reason = "the post has no image"
    elif prediction.image_status == "ignored (text-only model)":
        reason = "the model is text-only"
    elif prediction.image_status != "ok":
        reason = f"its image was not used ({prediction.image_status}: {post.image})"
    elif not isinstance(post.image, str | Path):
        reason = "its image was not given as a file"
    elif all(m.attention is None for m in prediction.entities):
        reason = "the model has no cross-attention over image regions"
    if reason is not None:
        print(f"heatmap: post {post_id}: nothing drawn, {reason}", file=sys.stderr)
        return
    save_heatmaps(folder, post_id, post.image, prediction, predictor)


def save_heatmaps(
    folder: Path, post_id: str, image_path: Any, prediction: Any, predictor: Any
) -> None:
    """One PNG per entity: its attention over the part of the image the model saw."""
    from smner.data.images import load_image_file
    from smner.heatmap import save_entity_heatmaps

    # The same reader as the model's (EXIF rotation, size limits), so the grid lines up.
    picture, _status = load_image_file(Path(image_path), predictor.limits)
    if picture is None:
        return
    preprocessing = getattr(getattr(predictor.model, "image", None), "preprocessing", None)
    drawn = save_entity_heatmaps(folder, post_id, picture, prediction.entities, preprocessing)
    for path in drawn.values():
        print(f"heatmap: {path}", file=sys.stderr)
