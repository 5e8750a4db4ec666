"""Parquet records, a row group at a time: each row group is bounded by its metadata before
it is decoded, and each row by its size measured in Arrow before it becomes Python values
(see :func:`parquet_rows`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smner.data.posts import (
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    post_from_record,
    text_size_problem,
)
from smner.data.records import pyarrow_modules
from smner.data.records.options import ReadOptions, RecordDigest, RecordRead
from smner.errors import DataFormatError

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


def parquet_rows(path: str, options: ReadOptions) -> Iterator[RecordRead]:
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
                    yield RecordRead(skipped, None, error, f"row {skipped}")
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
) -> RecordRead:
    record = {
        k: v
        for k, v in row.items()
        if not (v is None and k in ("id", "text", "tokens", "image", "images"))
    }
    where = f"row {number}"
    if refused is not None:
        return RecordRead(
            number,
            None,
            DataFormatError(path, None, f"{where}: {refused}"),
            where,
            record.get("id"),
        )
    try:
        post = post_from_record(record, path, number, base, where)
    except DataFormatError as exc:
        return RecordRead(number, None, exc, where, record.get("id"))
    return RecordRead(number, post, where=where)
