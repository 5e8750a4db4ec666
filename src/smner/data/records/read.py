"""Reading post records lazily from JSONL (a file or standard input) and Parquet files.

Each record becomes a :class:`~smner.data.posts.PostInput`, or, when it cannot be read or the
model cannot take it, a :class:`~smner.predict.streaming.FailedPost` whose error names the file and
the line (``errors="record"``) or a :class:`~smner.errors.DataFormatError` that stops the
run (``errors="raise"``). Blank JSONL lines are not records. ``skip`` passes over the first
records without parsing them (a resumed run; they still go into its :class:`RecordDigest`).

Every record is bounded before it is split into words: a JSONL line by
:data:`~smner.data.posts.MAX_RECORD_BYTES`, a Parquet row by its row group's metadata and then
by its size measured in Arrow (see :func:`_parquet_rows`), and every post's text by
:data:`~smner.data.posts.MAX_TEXT_CHARS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from smner.data.posts import (
    DEFAULT_MAX_TOKENS,
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    PostInput,
    parse_jsonl_line,
    post_from_record,
    post_words,
    text_size_problem,
)
from smner.data.predictions import ErrorPolicy, FailedPost
from smner.data.records import STANDARD_STREAM, RecordFormat, format_of, pyarrow_modules
from smner.errors import DataFormatError, SmnerError

#: Parquet rows decoded at a time, at most.
PARQUET_BATCH_ROWS = 1024
#: Bytes decoded at a time from a Parquet file: a row group of large rows is read in batches
#: of fewer rows.
PARQUET_BATCH_BYTES = 16 * 2**20
#: The most values (list items included) a Parquet record may hold, over all its columns.
MAX_RECORD_VALUES = 2**16
#: The most uncompressed bytes and values one column of a Parquet row group may hold. The
#: file's metadata gives sizes per row group, not per value: a larger column could hide one
#: value of any size, so its row group is refused before anything in it is decoded.
MAX_COLUMN_CHUNK_BYTES = 256 * 2**20
MAX_COLUMN_CHUNK_VALUES = 2**25

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
        digest: what every record read, skipped ones included, is added to (see
            :class:`RecordDigest`), or None.
    """

    errors: ErrorPolicy = "record"
    max_bytes: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    skip: int = 0
    digest: RecordDigest | None = None


class RecordDigest:
    """A running SHA-256 over the records of an input, in order, as they are in the file.

    A staging file records it with each chunk of output, and a resumed run compares it with
    the digest of the records it skips: records may have no id, so only their content can
    show that the staging file was made from this input. The digest after each record from
    ``keep_from`` on is kept until :meth:`after` asks for it (the reader runs ahead of the
    writer by a few windows). A live input is read in another thread than the writer's, so
    both methods hold a lock.
    """

    def __init__(self, keep_from: int = 0) -> None:
        self._lock = threading.Lock()
        self._hash = hashlib.sha256()
        self.count = 0
        self.keep_from = keep_from
        self._kept: deque[tuple[int, Any]] = deque()
        if keep_from == 0:
            self._kept.append((0, self._hash.copy()))

    def add(self, raw: bytes) -> None:
        with self._lock:
            self._hash.update(len(raw).to_bytes(8, "little"))
            self._hash.update(raw)
            self.count += 1
            if self.count >= self.keep_from:
                self._kept.append((self.count, self._hash.copy()))

    def after(self, count: int) -> str:
        """The digest of the first ``count`` records; earlier ones are forgotten."""
        with self._lock:
            while self._kept and self._kept[0][0] < count:
                self._kept.popleft()
            if not self._kept or self._kept[0][0] != count:
                raise ValueError(f"the digest after {count} records is not kept")
            return str(self._kept[0][1].hexdigest())


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
) -> Iterator[_Read]:
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
            yield _Read(number, None, DataFormatError(label, number, problem))
            continue
        try:
            yield _Read(number, parse_jsonl_line(raw, label, number, base))
        except DataFormatError as exc:
            yield _Read(number, None, exc, id=_record_id(raw))


def _parquet_rows(path: str, options: ReadOptions) -> Iterator[_Read]:
    """Rows of a Parquet file, a row group at a time, each in batches of bounded size.

    A row group is decoded only when the file's metadata bounds what decoding it can take
    (see :func:`_group_problem`); otherwise each of its rows becomes an error naming the rows,
    and the other row groups are read. Strings are read as dictionaries, so that a short
    dictionary page repeated by run-length encoding is not expanded before it is measured.
    Nulls in ``id``, ``text``, ``tokens``, ``image`` and ``images`` mean the key is absent (a
    column holds every key of the file).
    """
    from smner.fileio import InputFileError, check_input_file

    _pa, pq = pyarrow_modules()
    check_input_file(path, options.max_bytes, "Parquet input", "--max-input-mb")
    try:
        schema = pq.ParquetFile(path).schema
        leaves = [schema.column(i) for i in range(len(schema))]
        strings = [c.path for c in leaves if c.physical_type == "BYTE_ARRAY"]
        table = pq.ParquetFile(path, read_dictionary=strings)
        groups = [table.metadata.row_group(g) for g in range(table.metadata.num_row_groups)]
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataFormatError(
            path, None, f"not a readable Parquet file ({_first_line(exc)})"
        ) from None
    unpacked = sum(max(group.total_byte_size, 0) for group in groups)
    if options.max_bytes is not None and unpacked > options.max_bytes:
        raise InputFileError(
            path,
            f"holds {unpacked} bytes uncompressed, over the limit of {options.max_bytes} bytes "
            "for a Parquet input file (raise it with --max-input-mb)",
        )
    wide = [c for c in leaves if c.physical_type == "FIXED_LEN_BYTE_ARRAY" and c.length > 2**16]
    digest = options.digest or RecordDigest()
    base = Path(path).parent
    first = 1
    for g, group in enumerate(groups):
        rows = max(group.num_rows, 0)
        last = first + rows - 1
        problem = _group_problem(group)
        if wide:
            problem = f"column {wide[0].path!r} holds values of {wide[0].length} bytes each"
        number = first - 1
        decoded = _decoded_rows(table, g, group) if problem is None else iter(())
        while problem is None:
            try:
                item = next(decoded, None)
            except Exception as exc:  # a damaged page: the rest of the row group is refused
                problem = f"cannot be decoded ({_first_line(exc)})"
                break
            if item is None:
                if number < last:
                    problem = f"the row group holds {number - first + 1} rows, not {rows}"
                break
            number += 1
            row, refused = item
            digest.add(_row_bytes(row, refused))
            if number > options.skip:
                yield _row_read(row, refused, path, number, base)
        if problem is not None:
            where = f"rows {number + 1}-{last}" if number + 1 < last else f"row {last}"
            message = f"{where}: {problem}"
            for skipped in range(number + 1, last + 1):
                digest.add(b"\0refused row")
                if skipped > options.skip:
                    error = DataFormatError(path, None, message)
                    yield _Read(skipped, None, error, f"row {skipped}")
        first = last + 1


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _group_problem(group: Any) -> str | None:
    """Why a row group is not decoded, from its metadata alone, or None.

    The metadata gives each column's uncompressed size and number of values per row group,
    not per row: an average over the bound means some row is over it; a column larger than
    what is read at a time could hide one value of any size, and is refused too.
    """
    rows = max(group.num_rows, 1)
    columns = [group.column(c) for c in range(group.num_columns)]
    size = sum(max(c.total_uncompressed_size, 0) for c in columns)
    values = sum(max(c.num_values, 0) for c in columns)
    if size // rows > MAX_RECORD_BYTES:
        return (
            f"the row group holds {size} bytes uncompressed, {size // rows} a row, over the "
            f"limit of {MAX_RECORD_BYTES} bytes for a record"
        )
    if values // rows > MAX_RECORD_VALUES:
        return (
            f"the row group holds {values} values, {values // rows} a row, over the limit of "
            f"{MAX_RECORD_VALUES} values for a record"
        )
    for column in columns:
        if (
            column.total_uncompressed_size > MAX_COLUMN_CHUNK_BYTES
            or column.num_values > MAX_COLUMN_CHUNK_VALUES
        ):
            return (
                f"column {column.path_in_schema!r} of the row group holds "
                f"{column.total_uncompressed_size} bytes in {column.num_values} values "
                f"uncompressed, over the {MAX_COLUMN_CHUNK_BYTES} bytes or "
                f"{MAX_COLUMN_CHUNK_VALUES} values read at a time; write the file with smaller "
                "row groups (pyarrow: row_group_size)"
            )
    return None


def _decoded_rows(table: Any, g: int, group: Any) -> Iterator[tuple[dict[str, Any], str | None]]:
    """``(row, why it is refused or None)`` for each row of row group ``g``, decoded a batch
    at a time. Each row is measured in Arrow first; a refused one is never made into Python
    objects (its row holds only its ``id``, when that is small)."""
    columns = [group.column(c) for c in range(group.num_columns)]
    size = sum(max(c.total_uncompressed_size, 0) + 16 * max(c.num_values, 0) for c in columns)
    per_row = max(size // max(group.num_rows, 1), 1)
    batch_rows = max(1, min(PARQUET_BATCH_ROWS, PARQUET_BATCH_BYTES // per_row))
    for batch in table.iter_batches(batch_size=batch_rows, row_groups=[g], use_threads=False):
        problems = _refusals(batch)
        kept = [i for i, problem in enumerate(problems) if problem is None]
        rows = iter((batch.take(kept) if len(kept) < batch.num_rows else batch).to_pylist())
        ids = batch.column("id") if "id" in batch.schema.names else None
        id_sizes = _value_sizes(ids) if ids is not None else None
        for i, problem in enumerate(problems):
            if problem is None:
                yield next(rows), None
                continue
            small = ids is not None and id_sizes is not None and id_sizes[i] <= 1024
            yield ({"id": ids[i].as_py()} if small else {}), problem


def _refusals(batch: Any) -> list[str | None]:
    """For each row of ``batch``: why it is refused (too large a record, too long a post), or
    None; measured on the Arrow arrays, before any value is converted."""
    import numpy as np

    total = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        total += _value_sizes(column)
    problems: list[str | None] = [None] * batch.num_rows
    for i in np.flatnonzero(total > MAX_RECORD_BYTES):
        problems[int(i)] = (
            f"the record holds {int(total[i])} bytes, over the limit of {MAX_RECORD_BYTES}"
        )
    for name in ("text", "tokens"):
        if name not in batch.schema.names:
            continue
        chars = _text_sizes(batch.column(name))
        if chars is None:
            continue
        for i in np.flatnonzero(chars > MAX_TEXT_CHARS):
            if problems[int(i)] is None:
                problems[int(i)] = text_size_problem(int(chars[i]), name)
    return problems


def _value_sizes(array: Any) -> Any:
    """The bytes each value of an Arrow array takes once decoded (an int64 numpy array)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    n = len(array)
    if pa.types.is_dictionary(kind):
        inner = _value_sizes(array.dictionary)
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False)
        sizes = inner[indices] if len(inner) else np.zeros(n, dtype=np.int64)
        return sizes + 8
    if kind in (pa.string(), pa.large_string(), pa.binary(), pa.large_binary()):
        lengths = pc.binary_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        return lengths.astype(np.int64) + 8
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        return _per_list(array, _value_sizes(array.values)) + 8
    if pa.types.is_struct(kind):
        sizes = np.full(n, 8, dtype=np.int64)
        for child in array.flatten():
            sizes += _value_sizes(child)
        return sizes
    width = getattr(kind, "bit_width", 64) if pa.types.is_primitive(kind) else None
    if width is not None or pa.types.is_fixed_size_binary(kind):
        per = getattr(kind, "byte_width", None) or max(int(width or 64) // 8, 1)
        return np.full(n, int(per) + 8, dtype=np.int64)
    return np.array([array.slice(i, 1).nbytes + 8 for i in range(n)], dtype=np.int64)


def _per_list(array: Any, inner: Any) -> Any:
    """The sums of ``inner`` (one number per item of the underlying values) for each list."""
    import numpy as np

    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    sums = np.concatenate([[0], np.cumsum(inner, dtype=np.int64)])
    return sums[offsets[1:]] - sums[offsets[:-1]]


def _text_sizes(array: Any) -> Any:
    """Characters of each ``text`` (a string) or ``tokens`` (strings joined by spaces), or None
    for another type (the record is refused once converted, for its type)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind) and kind.value_type in (pa.string(), pa.large_string()):
        inner = pc.utf8_length(array.dictionary).fill_null(0).to_numpy(zero_copy_only=False)
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return inner[indices] if len(inner) else np.zeros(len(array), dtype=np.int64)
    if kind in (pa.string(), pa.large_string()):
        return pc.utf8_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _text_sizes(array.values)
        if inner is None:
            return None
        counts = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        return _per_list(array, inner) + np.maximum(counts - 1, 0)
    return None


def _row_bytes(row: dict[str, Any], refused: str | None) -> bytes:
    """A row as bytes for the digest: its values in a fixed order (a refused row: why)."""
    text = json.dumps(row, sort_keys=True, default=repr) + (refused or "")
    return text.encode("utf-8", "surrogatepass")


def _row_read(
    row: dict[str, Any], refused: str | None, path: str, number: int, base: Path
) -> _Read:
    record = {
        k: v
        for k, v in row.items()
        if not (v is None and k in ("id", "text", "tokens", "image", "images"))
    }
    where = f"row {number}"
    if refused is not None:
        return _Read(
            number,
            None,
            DataFormatError(path, None, f"{where}: {refused}"),
            where,
            record.get("id"),
        )
    try:
        post = post_from_record(record, path, number, base, where)
    except DataFormatError as exc:
        return _Read(number, None, exc, where, record.get("id"))
    return _Read(number, post, where=where)
