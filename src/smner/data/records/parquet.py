"""Parquet output: the staged JSONL records converted at the end, one row group at a time.

Two passes over the staged file keep memory bounded: the first finds one schema for every
record (a chunk whose posts have no entities says nothing of the entity type; a later one
does), the second writes the rows under it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smner.data.records import pyarrow_modules
from smner.errors import SmnerError
from smner.fileio import atomic_path

#: Records per Parquet row group.
ROWS_PER_GROUP = 4096


def _chunks(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) >= size:
                yield rows
                rows = []
    if rows:
        yield rows


def _columns(pa: Any, rows: list[dict[str, Any]]) -> Any:
    """A table of every key of ``rows`` (``from_pylist`` alone looks at the first row only)."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_pydict({key: [row.get(key) for row in rows] for key in keys})


def jsonl_to_parquet(source: Path, target: Path, rows_per_group: int = ROWS_PER_GROUP) -> None:
    """Write the JSONL records of ``source`` to the Parquet file ``target``, atomically."""
    pa, pq = pyarrow_modules()
    schema = None
    try:
        for rows in _chunks(source, rows_per_group):
            found = _columns(pa, rows).schema
            schema = (
                found
                if schema is None
                else pa.unify_schemas([schema, found], promote_options="permissive")
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SmnerError(
            f"{target}: the records do not fit one Parquet schema ({exc}); give each key "
            "values of one type (ids all strings or all numbers), or write JSONL"
        ) from None
    schema = schema if schema is not None else pa.schema([])
    with atomic_path(target) as tmp:
        writer = pq.ParquetWriter(str(tmp), schema)
        try:
            for rows in _chunks(source, rows_per_group):
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        finally:
            writer.close()
