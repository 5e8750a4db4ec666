"""Reading post records lazily from JSONL (a file or standard input) and Parquet files.

Each record becomes a :class:`~smner.inputs.PostInput`, or, when it cannot be read or the
model cannot take it, a :class:`~smner.streaming.FailedPost` whose error names the file and
the line (``errors="record"``) or a :class:`~smner.errors.DataFormatError` that stops the
run (``errors="raise"``). Blank JSONL lines are not records. ``skip`` passes over the first
records without parsing them (a resumed run).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from smner.errors import DataFormatError, SmnerError
from smner.inputs import (
    DEFAULT_MAX_TOKENS,
    MAX_RECORD_BYTES,
    PostInput,
    parse_jsonl_line,
    post_from_record,
    post_words,
)
from smner.records import STANDARD_STREAM, RecordFormat, format_of, pyarrow_modules
from smner.streaming import ErrorPolicy, FailedPost

#: Parquet rows decoded at a time.
PARQUET_BATCH_ROWS = 1024

Item = PostInput | FailedPost


@dataclass(frozen=True)
class ReadOptions:
    """How records are read.

    Fields:
        errors: ``raise`` stops at the first bad record; ``record`` turns it into a
            :class:`FailedPost` in its place.
        max_bytes: refuse an input file larger than this (None: no limit; records are read
            one at a time, so memory does not grow with the file).
        max_tokens: the most tokens a post may have.
        skip: records passed over, unparsed, at the start.
    """

    errors: ErrorPolicy = "record"
    max_bytes: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    skip: int = 0


def read_records(
    path: str, options: ReadOptions, fmt: RecordFormat | None = None, stdin: Any = None
) -> Iterator[Item]:
    """The records of ``path`` in order, checked, one by one.

    ``-`` is JSONL on standard input (or on ``stdin``, a binary file holding a copy of it);
    its relative image paths are read from the working folder.
    """
    fmt = fmt or format_of(path)
    if fmt == "parquet":
        return _checked(_parquet_rows(path, options), path, options)
    return _checked(_jsonl_lines(path, options, stdin), path, options)


def spool_stdin() -> IO[bytes]:
    """A copy of standard input in a temporary file (removed when closed), to read twice."""
    copy = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    shutil.copyfileobj(sys.stdin.buffer, copy)
    copy.seek(0)
    return copy


def _checked(
    items: Iterator[tuple[int | None, str | None, PostInput | DataFormatError]],
    path: str,
    options: ReadOptions,
) -> Iterator[Item]:
    """Each record checked against what the model takes; bad ones raised or recorded."""
    for line, where, item in items:
        if isinstance(item, PostInput):
            try:
                post_words(item, options.max_tokens)
            except SmnerError as exc:
                problem = str(exc) if where is None else f"{where}: {exc}"
                error = DataFormatError(_label(path), None if where else line, problem)
                if options.errors == "raise":
                    raise error from None
                yield FailedPost.of(item, str(error))
                continue
            yield item
            continue
        if options.errors == "raise":
            raise item
        known = {"id": str(line)} if line is not None else {}
        yield FailedPost(str(item), known, known.get("id"))


def _label(path: str) -> str:
    return "<stdin>" if path == STANDARD_STREAM else path


def _jsonl_lines(
    path: str, options: ReadOptions, stdin: Any
) -> Iterator[tuple[int | None, str | None, PostInput | DataFormatError]]:
    from smner.fileio import open_input_file

    if path == STANDARD_STREAM:
        handle = stdin if stdin is not None else sys.stdin.buffer
        yield from _parse_lines(handle, "<stdin>", Path.cwd(), options.skip)
        return
    with open_input_file(path, options.max_bytes, "JSONL input", "--max-input-mb") as handle:
        yield from _parse_lines(handle, path, Path(path).parent, options.skip)


def _parse_lines(
    handle: Any, label: str, base: Path, skip: int
) -> Iterator[tuple[int | None, str | None, PostInput | DataFormatError]]:
    from smner.fileio import read_lines

    seen = 0
    for number, raw in read_lines(handle, MAX_RECORD_BYTES):
        if raw is not None and not raw.strip():
            continue
        seen += 1
        if seen <= skip:
            continue
        if raw is None:
            yield (
                number,
                None,
                DataFormatError(label, number, f"the line is longer than {MAX_RECORD_BYTES} bytes"),
            )
            continue
        try:
            yield number, None, parse_jsonl_line(raw, label, number, base)
        except DataFormatError as exc:
            yield number, None, exc


def parquet_row_count(path: str) -> int:
    """The rows of a Parquet file, from its footer (nothing else is read)."""
    _pa, pq = pyarrow_modules()
    return int(pq.ParquetFile(path).metadata.num_rows)


def _parquet_rows(
    path: str, options: ReadOptions
) -> Iterator[tuple[int | None, str | None, PostInput | DataFormatError]]:
    """Rows of a Parquet file, a batch at a time; nulls in ``id``, ``text``, ``tokens`` and
    ``image`` mean the key is absent (a column holds every key of the file)."""
    from smner.fileio import check_input_file

    _pa, pq = pyarrow_modules()
    check_input_file(path, options.max_bytes, "Parquet input", "--max-input-mb")
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataFormatError(path, None, f"not a readable Parquet file ({exc})") from None
    base = Path(path).parent
    number = 0
    for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        rows = batch.to_pylist()
        for row in rows:
            number += 1
            if number <= options.skip:
                continue
            record = {
                k: v
                for k, v in row.items()
                if not (v is None and k in ("id", "text", "tokens", "image"))
            }
            where = f"row {number}"
            try:
                post = post_from_record(record, path, number, base, where)
            except DataFormatError as exc:
                yield number, where, exc
                continue
            yield number, where, post


def count_records(path: str) -> int | None:
    """How many records ``path`` holds when that is cheap to know (Parquet), else None."""
    if path != STANDARD_STREAM and format_of(path) == "parquet":
        return parquet_row_count(path)
    return None


def check_all(
    path: str, options: ReadOptions, fmt: RecordFormat | None = None, stdin: Any = None
) -> int:
    """Read and check every record, keeping none; the first bad one raises. The count."""
    count = 0
    for _item in read_records(path, replace(options, errors="raise"), fmt, stdin):
        count += 1
    return count
