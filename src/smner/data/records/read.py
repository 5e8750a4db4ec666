"""Reading post records lazily from JSONL (a file or standard input) and Parquet files.

Each record becomes a :class:`~smner.data.posts.PostInput`, or, when it cannot be read or the
model cannot take it, a :class:`~smner.predict.streaming.FailedPost` whose error names the file and
the line (``errors="record"``) or a :class:`~smner.errors.DataFormatError` that stops the
run (``errors="raise"``). Blank JSONL lines are not records. ``skip`` passes over the first
records without parsing them (a resumed run; they still go into its :class:`RecordDigest`).

Every record is bounded before it is split into words: a JSONL line by
:data:`~smner.data.posts.MAX_RECORD_BYTES`, a Parquet row by its row group's metadata and then
by its size measured in Arrow (see :mod:`smner.data.records.parquet_rows`), and every post's
text by :data:`~smner.data.posts.MAX_TEXT_CHARS`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from smner.data.posts import (
    MAX_RECORD_BYTES,
    PostInput,
    parse_jsonl_line,
    post_words,
)
from smner.data.predictions import FailedPost
from smner.data.records import STANDARD_STREAM, RecordFormat, format_of, pyarrow_modules
from smner.data.records.options import ReadOptions, RecordDigest, RecordRead
from smner.data.records.parquet_rows import parquet_rows
from smner.errors import DataFormatError, SmnerError

Item = PostInput | FailedPost


def read_records(
    path: str, options: ReadOptions, fmt: RecordFormat | None = None, stdin: Any = None
) -> Iterator[Item]:
    """The records of ``path`` in order, checked, one by one.

    ``-`` is JSONL on standard input (or on ``stdin``, a binary file holding a copy of it);
    its relative image paths are read from the working folder.
    """
    fmt = fmt or format_of(path)
    if fmt == "parquet":
        return _checked(parquet_rows(path, options), path, options)
    return _checked(_jsonl_lines(path, options, stdin), path, options)


def check_all(
    path: str, options: ReadOptions, fmt: RecordFormat | None = None, stdin: Any = None
) -> int:
    """Read and check every record, keeping none; the first bad one raises. The count."""
    count = 0
    for _item in read_records(path, replace(options, errors="raise", digest=None), fmt, stdin):
        count += 1
    return count


def count_records(path: str, scan: bool = False) -> int | None:
    """How many records ``path`` holds when that is cheap to know (Parquet), else None; with
    ``scan``, a JSONL file's non-blank lines are counted (read, not parsed)."""
    if path == STANDARD_STREAM:
        return None
    if format_of(path) == "parquet":
        _pa, pq = pyarrow_modules()
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # not a readable Parquet file: reading it says why
            return None
    if not scan:
        return None
    from smner.fileio import open_input_file, read_lines

    with open_input_file(path, None, "JSONL input") as handle:
        return sum(
            1 for _n, raw in read_lines(handle, MAX_RECORD_BYTES) if raw is None or raw.strip()
        )


def spool_stdin() -> IO[bytes]:
    """A copy of standard input in a temporary file (removed when closed), to read twice."""
    copy = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    shutil.copyfileobj(sys.stdin.buffer, copy)
    copy.seek(0)
    return copy


def _checked(reads: Iterator[RecordRead], path: str, options: ReadOptions) -> Iterator[Item]:
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


def _jsonl_lines(path: str, options: ReadOptions, stdin: Any) -> Iterator[RecordRead]:
    from smner.fileio import open_input_file

    digest = options.digest or RecordDigest()
    if path == STANDARD_STREAM:
        handle = stdin if stdin is not None else _standard_input()
        yield from _parse_lines(handle, "<stdin>", Path.cwd(), options.skip, digest)
        return
    with open_input_file(path, options.max_bytes, "JSONL input", "--max-input-mb") as handle:
        yield from _parse_lines(handle, path, Path(path).parent, options.skip, digest)


def _standard_input() -> Any:
    """Standard input as a binary stream with ``readline``: its file descriptor read directly
    (see :class:`DescriptorLines`), or ``sys.stdin.buffer`` where it has none (a stand-in)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return sys.stdin.buffer
    return DescriptorLines(fd)


class DescriptorLines:
    """``readline`` over a file descriptor, read with ``os.read`` a block at a time.

    A live input is read in a thread that may wait on an open pipe for hours. Waiting in
    ``sys.stdin.buffer`` would hold its lock, and an interpreter that exits meanwhile (an
    interrupt, a reader of the output that went away) aborts when it finds that lock held;
    ``os.read`` holds no lock of Python's.
    """

    def __init__(self, fd: int, block: int = 1 << 16) -> None:
        self.fd = fd
        self.block = block
        self._buffer = b""
        self._start = 0
        self._ended = False

    def readline(self, limit: int = -1) -> bytes:
        """The next line with its newline (at most ``limit`` bytes; b"" at the end)."""
        searched = self._start
        while True:
            newline = self._buffer.find(b"\n", searched)
            size = len(self._buffer) - self._start
            if newline >= 0:
                cut = newline + 1 - self._start
                if limit < 0 or cut <= limit:
                    break
            if 0 <= limit <= size:
                cut = limit
                break
            if self._ended:
                cut = size
                break
            searched = len(self._buffer)
            chunk = os.read(self.fd, self.block)
            if not chunk:
                self._ended = True
            self._buffer = self._buffer[self._start :] + chunk
            searched -= self._start
            self._start = 0
        line = self._buffer[self._start : self._start + cut]
        self._start += cut
        return line


def _record_id(raw: bytes) -> Any:
    """The ``id`` of a line that is a JSON object but not a valid record, else None."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record.get("id") if isinstance(record, dict) else None


def _parse_lines(
    handle: Any, label: str, base: Path, skip: int, digest: RecordDigest
) -> Iterator[RecordRead]:
    from smner.fileio import read_lines

    seen = 0
    for number, raw in read_lines(handle, MAX_RECORD_BYTES):
        if raw is not None and not raw.strip():
            continue
        seen += 1
        digest.add(raw if raw is not None else b"\0line too long")
        if seen <= skip:
            continue
        if raw is None:
            problem = f"the line is longer than {MAX_RECORD_BYTES} bytes"
            yield RecordRead(number, None, DataFormatError(label, number, problem))
            continue
        try:
            yield RecordRead(number, parse_jsonl_line(raw, label, number, base))
        except DataFormatError as exc:
            yield RecordRead(number, None, exc, id=_record_id(raw))
