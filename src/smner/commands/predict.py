"""``smner predict``: entities of new posts, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smner.commands import (
    add_input_limit_option,
    add_model_option,
    add_quantize_option,
    model_folder,
    positive_float,
    positive_int,
)
from smner.commands.predict_output import (
    ImageReport,
    draw_post_heatmaps,
    format_conll_predictions,
    format_table,
    warn_about_images,
)
from smner.data.posts import PostInput
from smner.data.predictions import FailedPost
from smner.errors import SmnerError
from smner.predict.streaming import DEFAULT_FLUSH_AFTER, DEFAULT_WINDOW

if TYPE_CHECKING:
    from smner.data.predictions import PostPrediction


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
        "before predicting anything). Standard input (--input -) may stay open, as from "
        "tail -f: with --format jsonl or conll, the posts that have come are predicted and "
        "written when the input pauses (--flush-after), not only when a window is full.",
        epilog="examples:\n"
        "  smner predict --model runs/t17/best --text 'Kevin Durant joins the Warriors'\n"
        "  echo 'George visited Paris' | smner predict --model runs/t17/best --text - "
        "--format table\n"
        "  smner predict --model org/name --input posts.jsonl --output out.jsonl\n"
        "  smner predict --model runs/t17/best --input posts.parquet --output out.parquet "
        "--workers 2\n"
        "  cat posts.jsonl | smner predict --model runs/t17/best --input - | head\n"
        "  tail -f posts.jsonl | smner predict --model runs/t17/best --input -   # live\n"
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
    parser.add_argument(
        "--image",
        metavar="PATH",
        action="append",
        help="image of the --text post; repeat it for a post with several images "
        "(--image a.jpg --image b.jpg: up to the model's max_images)",
    )
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
        "between posts; table: one row per entity, for reading in a terminal, written at the "
        "end of the input (it does not stream)",
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
        "--flush-after",
        type=positive_float,
        default=DEFAULT_FLUSH_AFTER,
        metavar="SECONDS",
        help="with --input -: predict and write the posts that have come once the first of "
        "them has waited this long, so a pause in the input never holds a post back "
        "(default: %(default)s); posts that keep coming fast still fill --window. Files are "
        "read in full windows; --strict and --format table do not stream",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="processes, each with its own copy of the model, the machine's threads split "
        "between them (default: 1): at most the machine's CPUs, and as many as fit in the "
        "available memory once the first has loaded its model; with --engine ray, Ray actors",
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
        'one (default: write it with an "error" field and go on). With --input - it reads '
        "standard input to its end first, so it does not stream",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a run that was stopped: keep the records already in --output's "
        "staging file and predict the rest of the same input (FILE.partial.input records "
        "which input it was; another one is refused)",
    )
    add_input_limit_option(parser, streamed=True)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_quantize_option(parser)
    parser.set_defaults(handler=run)


FORMATS = ("jsonl", "conll", "table")


def _text_post(text: str, images: list[str] | None, post_id: str) -> PostInput:
    """The --text post with its --image (one) or images (several)."""
    if images is not None and len(images) > 1:
        return PostInput(text=text, id=post_id, images=list(images))
    return PostInput(text=text, id=post_id, image=images[0] if images else None)


def _stdin_posts(images: list[str] | None) -> list[PostInput]:
    lines = [line.strip() for line in sys.stdin.read().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise SmnerError("--text -: no text on stdin (one post per line)")
    if images and len(lines) > 1:
        raise SmnerError(f"--image goes with one post; stdin holds {len(lines)} lines")
    return [_text_post(t, images, str(n)) for n, t in enumerate(lines, start=1)]


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
            raise SmnerError(
                '--image goes with --text; in --input records use "image" (or "images")'
            )
        return run_file(args)
    for option in ("resume", "strict"):
        if getattr(args, option):
            raise SmnerError(f"--{option} goes with --input")
    if args.engine != "local":
        raise SmnerError("--engine ray goes with --input")
    from smner.predict.predictor import Predictor

    predictor = Predictor.from_pretrained(
        model_folder(args), device=args.device, quantize=args.quantize
    )
    if args.text == "-":
        posts = _stdin_posts(args.image)
        for post in posts:
            predictor.tokenize(post)
    else:
        posts = [_text_post(args.text, args.image, "1")]
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
    """``--input``: records streamed through the model in windows (see smner.predict.job)."""
    import functools

    from smner.predict.job import FileJob, JsonlEncoder, run_file_job

    if args.engine == "ray":
        return run_ray(args)
    job = FileJob(
        input=args.input,
        model_dir=str(model_folder(args)),
        output=args.output or "-",
        device=args.device,
        quantize=args.quantize,
        batch_size=args.batch_size,
        window=args.window,
        workers=args.workers,
        strict=args.strict,
        resume=args.resume,
        max_input_bytes=args.max_input_mb * 2**20 if args.max_input_mb else None,
        progress=sys.stderr.isatty(),
        flush_after=None if args.format == "table" else args.flush_after,
    )
    encoders = {"jsonl": lambda: JsonlEncoder(args.explain), "conll": ConllEncoder}
    encoder = encoders.get(args.format, TableEncoder)()

    @functools.cache
    def predictor() -> Any:
        from smner.predict.predictor import Predictor

        return Predictor.from_pretrained(job.model_dir, device=job.device, quantize=job.quantize)

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
    if args.quantize:
        raise SmnerError("--quantize goes with the local engine")
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
