"""``smner predict``: entities of new posts, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smner.commands import add_input_limit_option, add_model_option, model_folder, positive_int
from smner.errors import SmnerError
from smner.inputs import PostInput
from smner.streaming import DEFAULT_WINDOW, FailedPost

if TYPE_CHECKING:
    from smner.predict import PostPrediction


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "predict",
        help="find entities in new posts",
        description="Find entities in one post (--text, optionally --image) or in a JSONL or "
        'Parquet file of records {"id", "text" or "tokens", "image" (optional path)}. Raw '
        'text is split by a tweet-aware tokenizer. Output records add "entities": [{text, '
        "type, start, end, char_start, char_end, score}] (token ends and character ends are "
        'exclusive). An "image" path in a record is read relative to the input file\'s '
        "folder, unless it is absolute; images that are not found are counted in one "
        "warning. Files of any size stream through: a window of records is read, predicted "
        "and written before the next, in input order; a record the model cannot take gets "
        'an "error" field in its output record instead of stopping the run (--strict stops '
        "before predicting anything).",
        epilog="examples:\n"
        "  smner predict --model runs/t17/best --text 'Kevin Durant joins the Warriors'\n"
        "  echo 'George visited Paris' | smner predict --model runs/t17/best --text - "
        "--format table\n"
        "  smner predict --model org/name --input posts.jsonl --output out.jsonl\n"
        "  smner predict --model runs/t17/best --input posts.parquet --output out.parquet "
        "--workers 2\n"
        "  cat posts.jsonl | smner predict --model runs/t17/best --input - | head\n"
        "  smner predict --model runs/t17/best --input posts.jsonl --output out.jsonl "
        "--resume   # after a kill",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--text", help="the text of one post; '-' reads posts from stdin, one per line"
    )
    source.add_argument(
        "--input",
        metavar="FILE",
        help="JSONL (one JSON record per line) or Parquet (.parquet, needs smner[parquet]) "
        "records; '-' reads JSONL from stdin. With --engine ray, also a folder of such files",
    )
    add_model_option(parser)
    parser.add_argument("--image", metavar="PATH", help="image of the --text post")
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the predictions here (default: stdout; '-' too); a .parquet file is "
        "Parquet. A file is staged in FILE.partial while the run goes on and appears "
        "complete at the end",
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
    parser.add_argument(
        "--window",
        type=positive_int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help="records read ahead and sorted by length before they are predicted (default: "
        "%(default)s); memory and the wait for the first output grow with it",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="processes, each with its own copy of the model, the machine's threads split "
        "between them (default: 1); with --engine ray, Ray actors",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (default); ray: Ray Data, on the cluster RAY_ADDRESS "
        "names or a local Ray (needs smner[ray])",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="read and check every record before predicting any, and stop at the first bad "
        'one (default: write it with an "error" field and go on)',
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a run that was stopped: keep the records already in --output's "
        "staging file and predict the rest of the same input",
    )
    add_input_limit_option(parser, streamed=True)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.set_defaults(handler=run)


FORMATS = ("jsonl", "conll", "table")


def _stdin_posts(image: str | None) -> list[PostInput]:
    lines = [line.strip() for line in sys.stdin.read().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise SmnerError("--text -: no text on stdin (one post per line)")
    if image and len(lines) > 1:
        raise SmnerError(f"--image goes with one post; stdin holds {len(lines)} lines")
    return [PostInput(text=t, id=str(n), image=image) for n, t in enumerate(lines, start=1)]


def _check_heatmaps_folder(value: str) -> None:
    """A bad --heatmaps folder must not cost the predictions: checked before any."""
    heatmaps = Path(value)
    if heatmaps.exists() and not heatmaps.is_dir():
        raise SmnerError(f"--heatmaps {value}: exists and is not a folder")
    parent = next((p for p in [heatmaps, *heatmaps.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise SmnerError(f"--heatmaps {value}: {parent} is not a folder")


def run(args: argparse.Namespace) -> int:
    if args.heatmaps:
        _check_heatmaps_folder(args.heatmaps)
    if args.input is not None:
        if args.image:
            raise SmnerError('--image goes with --text; in --input records use "image"')
        return run_file(args)
    for option in ("resume", "strict"):
        if getattr(args, option):
            raise SmnerError(f"--{option} goes with --input")
    if args.engine != "local":
        raise SmnerError("--engine ray goes with --input")
    from smner.predict import Predictor

    predictor = Predictor.from_pretrained(model_folder(args), device=args.device)
    if args.text == "-":
        posts = _stdin_posts(args.image)
        for post in posts:
            predictor.tokenize(post)
    else:
        posts = [PostInput(text=args.text, image=args.image, id="1")]
    predictions = predictor.predict_many(posts, args.batch_size)
    warn_about_images(posts, predictions, None)
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


class ConllEncoder:
    """Token<TAB>tag blocks; a failed post has no tokens to tag and is left out."""

    line_per_record = False

    def chunk(self, results: list[Any]) -> bytes:
        predicted = [r for r in results if not isinstance(r, FailedPost)]
        return format_conll_predictions(predicted).encode("utf-8")

    def end(self) -> bytes:
        return b""


class TableEncoder:
    """One aligned table for the whole run, written at the end (it is for a terminal)."""

    line_per_record = False

    def __init__(self) -> None:
        self.predictions: list[PostPrediction] = []

    def chunk(self, results: list[Any]) -> bytes:
        self.predictions += [r for r in results if not isinstance(r, FailedPost)]
        return b""

    def end(self) -> bytes:
        return format_table(self.predictions).encode("utf-8")


def run_file(args: argparse.Namespace) -> int:
    """``--input``: records streamed through the model in windows (see smner.predict_job)."""
    import functools

    from smner.predict_job import FileJob, JsonlEncoder, run_file_job

    if args.engine == "ray":
        return run_ray(args)
    job = FileJob(
        input=args.input,
        model_dir=str(model_folder(args)),
        output=args.output or "-",
        device=args.device,
        batch_size=args.batch_size,
        window=args.window,
        workers=args.workers,
        strict=args.strict,
        resume=args.resume,
        max_input_bytes=args.max_input_mb * 2**20 if args.max_input_mb else None,
        progress=sys.stderr.isatty(),
    )
    encoders = {"jsonl": lambda: JsonlEncoder(args.explain), "conll": ConllEncoder}
    encoder = encoders.get(args.format, TableEncoder)()

    @functools.cache
    def predictor() -> Any:
        from smner.predict import Predictor

        return Predictor.from_pretrained(job.model_dir, device=args.device)

    images = ImageReport(args.input)

    def on_window(window: list[Any], results: list[Any]) -> None:
        images.add(window, results)
        if args.heatmaps:
            for post, result in zip(window, results, strict=True):
                if not isinstance(result, FailedPost):
                    draw_post_heatmaps(Path(args.heatmaps), post, result, predictor())

    report = run_file_job(job, encoder, on_window, predictor)
    if report.already_complete:
        print(f"smner: {report.output} is complete; nothing to resume", file=sys.stderr)
        return 0
    images.warn()
    if report.resumed_after:
        print(
            f"smner: resumed after the {report.resumed_after} records already in "
            f"{report.output}'s staging file",
            file=sys.stderr,
        )
    if report.failed:
        kept = (
            f'their records in {report.output} carry an "error" field'
            if encoder.line_per_record
            else f"they are left out of the {args.format} output"
        )
        print(
            f"smner: warning: {report.failed} of {report.written} posts could not be "
            f"predicted (first: {report.first_error}); {kept}",
            file=sys.stderr,
        )
    return 0


def run_ray(args: argparse.Namespace) -> int:
    """``--engine ray``: the input file or folder through Ray Data (smner.integrations.ray)."""
    from smner.integrations.ray import RayFileJob, predict_files

    if args.input == "-":
        raise SmnerError("--engine ray reads files or folders; standard input goes with local")
    if args.resume or args.strict or args.heatmaps or args.format != "jsonl":
        raise SmnerError(
            "--engine ray writes JSONL or Parquet records; --resume, --strict, --heatmaps "
            "and --format conll/table go with the local engine"
        )
    job = RayFileJob(
        input=args.input,
        output=args.output or "-",
        model=args.model if args.revision is None else f"{args.model}@{args.revision}",
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        explain=args.explain,
    )
    count = predict_files(job)
    done = f"{count} posts predicted" if count is not None else "predictions written"
    print(f"smner: {done} with Ray into {job.output}", file=sys.stderr)
    return 0


def _named_image(post: PostInput) -> str | None:
    """The image path as the input wrote it (None for no image, or bytes)."""
    if not isinstance(post.image, str | Path):
        return None
    return str(post.image)


class ImageReport:
    """Counts of the images named in the input that were not found or not usable, and the
    first of each, gathered window by window and told in one warning line each."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.named = 0
        self.missing: list[Path] = []  # the first one only
        self.missing_count = 0
        self.unusable: list[tuple[Path, str]] = []  # the first one only
        self.unusable_count = 0

    def add(self, posts: Sequence[Any], predictions: Sequence[Any]) -> None:
        for post, prediction in zip(posts, predictions, strict=True):
            if isinstance(prediction, FailedPost) or not isinstance(post, PostInput):
                continue
            if _named_image(post) is None:
                continue
            self.named += 1
            path, status = Path(str(post.image)), prediction.image_status
            if status == "missing":
                self.missing_count += 1
                self.missing = self.missing or [path]
            elif status not in ("ok", "ignored (text-only model)"):
                self.unusable_count += 1
                self.unusable = self.unusable or [(path, status)]

    def warn(self) -> None:
        if not self.named:
            return
        source = self.source
        stdin = source == "-"
        where = " in standard input" if stdin else (f" in {source}" if source else "")
        rule = ""
        if stdin:
            rule = f"; relative image paths are read from the working folder, {Path.cwd()}"
        elif source:
            from smner.records import format_of

            kind = "Parquet" if format_of(source) == "parquet" else "JSONL"
            folder = Path(source).parent.resolve()
            rule = f"; relative image paths are read from the {kind} file's folder, {folder}"
        if self.missing_count:
            print(
                f"smner: warning: {self.missing_count} of {self.named} images named{where} "
                f"were not found (first: {self.missing[0]}){rule}; those posts were "
                "predicted without an image",
                file=sys.stderr,
            )
        if self.unusable_count:
            path, status = self.unusable[0]
            print(
                f"smner: warning: {self.unusable_count} of {self.named} images named{where} "
                f"could not be used (first: {path}, {status}); those posts were predicted "
                "without an image",
                file=sys.stderr,
            )


def warn_about_images(
    posts: Sequence[PostInput], predictions: Sequence[PostPrediction], source: str | None
) -> None:
    """One warning line for images named in the input that were not found (and one for those
    found but not usable), with the count and the first path."""
    report = ImageReport(source)
    report.add(posts, predictions)
    report.warn()


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
    encoder = predictor.model.image_encoder
    preprocessing = encoder.preprocessing if encoder is not None else None
    drawn = save_entity_heatmaps(folder, post_id, picture, prediction.entities, preprocessing)
    for path in drawn.values():
        print(f"heatmap: {path}", file=sys.stderr)
