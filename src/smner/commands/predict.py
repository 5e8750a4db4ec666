"""``smner predict``: entities of new posts, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smner.commands import add_input_limit_option, positive_int
from smner.errors import DataFormatError, SmnerError


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "predict",
        help="find entities in new posts",
        description="Find entities in one post (--text, optionally --image) or in a JSONL file "
        'of records {"id", "text" or "tokens", "image" (optional path)}. Raw text is split '
        'by a tweet-aware tokenizer. Output records add "entities": [{text, type, start, end, '
        "char_start, char_end, score}] (token ends and character ends are exclusive).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text of one post")
    source.add_argument("--input", metavar="FILE.jsonl", help="one JSON record per line")
    parser.add_argument("--model", required=True, metavar="DIR", help="saved model folder")
    parser.add_argument("--image", metavar="PATH", help="image of the --text post")
    parser.add_argument(
        "--output", metavar="FILE.jsonl", help="write records here (default: stdout)"
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


def _lines(path: str, max_bytes: int | None) -> Iterator[tuple[int, str]]:
    """``(number, text)`` of each line; invalid UTF-8 is an error naming its line."""
    from smner.data.conll import DEFAULT_MAX_FILE_MB
    from smner.fileio import read_input_bytes

    limit = DEFAULT_MAX_FILE_MB * 2**20 if max_bytes is None else max_bytes
    data = read_input_bytes(path, limit, "JSONL input", "--max-input-mb")
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                path, number, f"invalid UTF-8 at byte {exc.start} of the line; expected UTF-8"
            ) from None


def _lone_surrogate(record: dict[str, Any]) -> str | None:
    """Which field holds a lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot hold it)."""
    for key in ("id", "text", "tokens", "image"):
        values = record.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return f'"{key}" holds a lone surrogate code point'
    return None


def read_records(
    path: str,
    check: Callable[[dict[str, Any]], object] | None = None,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """The records of a JSONL file; a bad one, or one ``check`` refuses, names its line.

    ``check`` raises :class:`SmnerError` for a record the model cannot take (no tokens, too
    many), so that such a record stops the run before anything is predicted or written.
    """
    records = []
    for number, line in _lines(path, max_bytes):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not (
            isinstance(record.get("text"), str) or isinstance(record.get("tokens"), list)
        ):
            raise DataFormatError(
                path, number, 'expected an object with "text" (string) or "tokens" (list)'
            )
        tokens = record.get("tokens")
        if tokens is not None and not (
            isinstance(tokens, list) and all(isinstance(t, str) and t.strip() for t in tokens)
        ):
            raise DataFormatError(path, number, '"tokens" must be a list of non-blank strings')
        if record.get("text") is not None and record.get("tokens") is not None:
            raise DataFormatError(path, number, 'give "text" or "tokens", not both')
        bad = _lone_surrogate(record)
        if bad:
            raise DataFormatError(path, number, f"{bad}; expected text valid in UTF-8")
        if record.get("image") is not None and not isinstance(record["image"], str):
            raise DataFormatError(path, number, '"image" must be a path (string)')
        if check is not None:
            try:
                check(record)
            except SmnerError as exc:
                raise DataFormatError(path, number, str(exc)) from None
        record.setdefault("id", str(number))
        records.append(record)
    return records


def run(args: argparse.Namespace) -> int:
    from smner.predict import PostInput, Predictor

    if args.heatmaps:  # checked now: a bad folder must not cost the predictions
        heatmaps = Path(args.heatmaps)
        if heatmaps.exists() and not heatmaps.is_dir():
            raise SmnerError(f"--heatmaps {args.heatmaps}: exists and is not a folder")
        heatmaps.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_pretrained(args.model, device=args.device)
    if args.text is not None:
        records = [{"id": "1", "text": args.text, "image": args.image}]
    else:
        if args.image:
            raise SmnerError('--image goes with --text; in --input records use "image"')
        records = read_records(
            args.input,
            lambda r: predictor.tokenize(PostInput(text=r.get("text"), tokens=r.get("tokens"))),
            args.max_input_mb * 2**20,
        )
    base = Path(args.input).parent if args.input else Path(".")
    posts = []
    for r in records:
        image = r.get("image")
        image_path = (base / image) if image and args.input else image
        posts.append(PostInput(text=r.get("text"), tokens=r.get("tokens"), image=image_path))
        r["_image_path"] = image_path
    predictions = predictor.predict_many(posts, args.batch_size)
    lines = []
    for record, prediction in zip(records, predictions, strict=True):
        out = {k: v for k, v in record.items() if not k.startswith("_")}
        out.update(prediction.to_dict(explain=args.explain))
        lines.append(json.dumps(out, ensure_ascii=False))
        if args.heatmaps and record["_image_path"] and prediction.image_status == "ok":
            save_heatmaps(
                Path(args.heatmaps),
                str(record["id"]),
                record["_image_path"],
                prediction,
                predictor,
            )
    text = "\n".join(lines) + "\n"
    if args.output:
        from smner.fileio import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


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
