"""How post records are read, and one record as read: shared by the JSONL and Parquet
readers (:mod:`smner.data.records.read`, :mod:`smner.data.records.parquet_rows`)."""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from smner.data.posts import DEFAULT_MAX_TOKENS, PostInput
from smner.data.predictions import ErrorPolicy
from smner.errors import DataFormatError


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
class RecordRead:
    """One record as read: its post, or why it could not be read, and where it was."""

    number: int
    post: PostInput | None
    error: DataFormatError | None = None
    #: ``"row N"`` for a Parquet row (DataFormatError names lines otherwise)
    where: str | None = None
    #: the record's id, when it could be read (the output record keeps it)
    id: Any = None
