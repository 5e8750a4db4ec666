"""Reading post records lazily from JSONL (a file or standard input) and Parquet files.

Each record becomes a :class:`~smner.data.posts.PostInput`, or, when it cannot be read or the
model cannot take it, a :class:`~smner.predict.streaming.FailedPost` whose error names the file and
the line (``errors="record"``) or a :class:`~smner.errors.DataFormatError` that stops the
run (``errors="raise"``). Blank JSONL lines are not records. ``skip`` passes over the first
records without parsing them (a resumed run).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from smner.data.posts import (
    DEFAULT_MAX_TOKENS,
    MAX_RECORD_BYTES,
    PostInput,
    parse_jsonl_line,
    post_from_record,
    post_words,
)
from smner.data.predictions import ErrorPolicy, FailedPost
from smner.data.records import STANDARD_STREAM, RecordFormat, format_of, pyarrow_modules
from smner.errors import DataFormatError, SmnerError

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


@dataclass(frozen=True)
class _Read:
    """One record as read: its post, or why it could not be read, and where it was."""

    number: int
    post: PostInput | None
    error: DataFormatError | None = None
    #: ``"row N"`` for a Parquet row (DataFormatError names lines otherwise)
    where: str | None = None
    #: the record's id, when it could be read (the output record keeps it)
    id: Any = None


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


def check_all(
    path: str, options: ReadOptions, fmt: RecordFormat | None = None, stdin: Any = None
) -> int:
    """Read and check every record, keeping none; the first bad one raises. The count."""
    count = 0
    for _item in read_records(path, replace(options, errors="raise"), fmt, stdin):
        count += 1
    return count


def count_records(path: str) -> int | None:
    """How many records ``path`` holds when that is cheap to know (Parquet), else None."""
    if path != STANDARD_STREAM and format_of(path) == "parquet":
        _pa, pq = pyarrow_modules()
        return int(pq.ParquetFile(path).metadata.num_rows)
    return None


def spool_stdin() -> IO[bytes]:
    """A copy of standard input in a temporary file (removed when closed), to read twice."""
    copy = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    shutil.copyfileobj(sys.stdin.buffer, copy)
    copy.seek(0)
    return copy


def _checked(reads: Iterator[_Read], path: str, options: ReadOptions) -> Iterator[Item]:
    """Each record checked against what the model takes; bad ones raised or recorded."""
    label = "<stdin>" if path == STANDARD_STREAM else path
    for read in reads:
        error = read.error
        if read.post is not None:
            try:
                post_words(read.post, options.max_tokens)
            except SmnerError as exc:
                if read.where is None:
                    error = DataFormatError(label, read.number, str(exc))
                else:
                    error = DataFormatError(label, None, f"{read.where}: {exc}")
            else:
                yield read.post
                continue
        assert error is not None
        if options.errors == "raise":
            raise error
        if read.post is not None:
            yield FailedPost.of(read.post, str(error))
            continue
        known = read.id if read.id is not None else str(read.number)
        yield FailedPost(str(error), {"id": known}, known)


def _jsonl_lines(path: str, options: ReadOptions, stdin: Any) -> Iterator[_Read]:
    from smner.fileio import open_input_file

    if path == STANDARD_STREAM:
        handle = stdin if stdin is not None else sys.stdin.buffer
        yield from _parse_lines(handle, "<stdin>", Path.cwd(), options.skip)
        return
    with open_input_file(path, options.max_bytes, "JSONL input", "--max-input-mb") as handle:
        yield from _parse_lines(handle, path, Path(path).parent, options.skip)


def _record_id(raw: bytes) -> Any:
    """The ``id`` of a line that is a JSON object but not a valid record, else None."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record.get("id") if isinstance(record, dict) else None


def _parse_lines(handle: Any, label: str, base: Path, skip: int) -> Iterator[_Read]:
    from smner.fileio import read_lines

    seen = 0
    for number, raw in read_lines(handle, MAX_RECORD_BYTES):
        if raw is not None and not raw.strip():
            continue
        seen += 1
        if seen <= skip:
            continue
        if raw is None:
            problem = f"the line is longer than {MAX_RECORD_BYTES} bytes"
            yield _Read(number, None, DataFormatError(label, number, problem))
            continue
        try:
            yield _Read(number, parse_jsonl_line(raw, label, number, base))
        except DataFormatError as exc:
            yield _Read(number, None, exc, id=_record_id(raw))


def _parquet_rows(path: str, options: ReadOptions) -> Iterator[_Read]:
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
        for row in batch.to_pylist():
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
                yield _Read(number, None, exc, where, record.get("id"))
                continue
            yield _Read(number, post, where=where)
