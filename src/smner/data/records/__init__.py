"""Post records in files: JSONL and Parquet, read one record at a time and written one chunk
at a time, so that a file of any size passes through bounded memory.

The format follows the file's suffix (``.parquet`` is Parquet, anything else JSONL); ``-``
is standard input or output, always JSONL. Parquet goes through pyarrow, an optional
dependency (``pip install 'smner[parquet]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

RecordFormat = Literal["jsonl", "parquet"]

#: Where ``-`` reads from and writes to.
STANDARD_STREAM = "-"


def format_of(path: str | Path) -> RecordFormat:
    """``parquet`` for a ``.parquet`` or ``.pq`` file, ``jsonl`` for anything else."""
    if str(path) == STANDARD_STREAM:
        return "jsonl"
    return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "jsonl"


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or an error naming the extra that installs them."""
    from smner.extras import import_extra

    pa = import_extra("pyarrow", "parquet", "reading and writing Parquet files")
    pq = import_extra("pyarrow.parquet", "parquet", "reading and writing Parquet files")
    return pa, pq
