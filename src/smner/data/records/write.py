"""Writing predictions a chunk at a time: to standard output or a FIFO at once, or to a file
through a staging file that a killed run can be resumed from.

A file output ``OUT`` is written to ``OUT.partial`` beside it: each chunk is appended with one
write and made durable (fsync) before the next is read, and the finished file replaces
``OUT`` in one rename (a Parquet ``OUT`` is converted from the staged JSONL at the end), so a
reader never sees half an output. After a kill, ``OUT.partial`` holds every finished record;
``--resume`` cuts away a last line torn by the kill, counts the complete ones and goes on
after them.

``OUT.partial.input`` ties the staging file to its input: a first line naming the input (its
path, size and modification time), then, after each chunk is durable, one line with the
records staged so far, their bytes in ``OUT.partial`` and the SHA-256 of the input records
they were made from (:class:`~smner.data.records.read.RecordDigest`). A resume is refused
when that record does not match: another input, lines that are not records, more records
than the input holds, or a staging file that is not a regular file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smner.errors import SmnerError
from smner.fileio import current_umask, output_kind

#: Bytes read at a time when counting the lines of a staging file.
_BLOCK = 1 << 20
#: The longest line of a staging file that resume reads (an output record).
_MAX_STAGED_LINE = 256 * 2**20


def partial_path(target: Path) -> Path:
    """Where the output ``target`` is staged until the run ends."""
    return target.with_name(target.name + ".partial")


def fingerprint_path(target: Path) -> Path:
    """Where the input of ``target``'s staging file is recorded (see the module doc)."""
    return target.with_name(target.name + ".partial.input")


@dataclass(frozen=True)
class InputIdentity:
    """The input a staging file is made from: its path, size and modification time (None
    for standard input, which has neither)."""

    path: str
    size: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, path: str) -> InputIdentity:
        if path == "-":
            return cls("-")
        info = os.stat(path)
        return cls(str(Path(path).resolve()), info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class Staged:
    """What a resumed staging file holds: records, their bytes, and the SHA-256 of the input
    records they were made from."""

    records: int = 0
    size: int = 0
    digest: str | None = None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _regular_or_missing(path: Path, what: str) -> bool:
    """Whether ``path`` exists as a regular file (links not followed); anything else there is
    refused: reading a FIFO waits forever, appending through a link writes elsewhere."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise SmnerError(
            f"{path}: is {_kind(mode)}; expected a regular file as {what}: remove it to start again"
        )
    return True


def _open_regular(path: Path, flags: int, what: str) -> int:
    """``os.open`` without following a link or waiting on a FIFO; a regular file only."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        raise SmnerError(f"{path}: cannot open {what} ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SmnerError(
            f"{path}: is {_kind(mode)}; expected a regular file as {what}: remove it to start again"
        )
    os.set_blocking(fd, True)
    return fd


def complete_lines(path: Path) -> tuple[int, int]:
    """``(complete lines, bytes up to the end of the last one)`` of a file, read in blocks."""
    count, end, offset = 0, 0, 0
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            newlines = block.count(b"\n")
            if newlines:
                count += newlines
                end = offset + block.rindex(b"\n") + 1
            offset += len(block)
    return count, end


class Sink:
    """Where encoded chunks go; ``done`` records were there before this run began."""

    done: int = 0
    #: True when a resumed output was already complete: nothing is left to write.
    complete: bool = False
    where: str = "standard output"

    def write(self, data: bytes, mark: tuple[int, str] | None = None) -> None:
        """Write ``data``; ``mark`` is ``(records written so far, digest of their input)``."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called once, after the last chunk, when the run has succeeded."""

    def close(self) -> None:
        """Called always, last: release what is open; an unfinished output stays staged."""


class StdoutSink(Sink):
    """Standard output: each chunk written and flushed at once (``| head`` sees it)."""

    def write(self, data: bytes, mark: tuple[int, str] | None = None) -> None:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text-only stand-in for stdout
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
            return
        sys.stdout.flush()
        buffer.write(data)
        buffer.flush()


class StreamSink(Sink):
    """A FIFO or character device: written through, chunk by chunk, never replaced."""

    def __init__(self, target: Path) -> None:
        self.where = str(target)
        self._handle: IO[bytes] = open(target, "wb")  # noqa: SIM115 (closed in close())

    def write(self, data: bytes, mark: tuple[int, str] | None = None) -> None:
        self._handle.write(data)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class CompleteOutput(Sink):
    """A resumed output that an earlier run finished: there is nothing left to write."""

    complete = True

    def __init__(self, target: Path) -> None:
        self.where = str(target)


@dataclass
class StagedFileSink(Sink):
    """A regular file, staged in ``OUT.partial`` with durable appends (see the module doc).

    ``finisher`` turns the staged JSONL into the final file (Parquet); None renames it.
    ``ledger`` is the open ``OUT.partial.input`` (-1: none kept); ``expected`` the digest of
    the input records an earlier run staged.
    """

    target: Path
    partial: Path
    fd: int
    done: int = 0
    finisher: Any = None
    wrote: bool = False
    ledger: int = -1
    expected: str | None = None

    @property
    def where(self) -> str:  # type: ignore[override]
        return str(self.target)

    def write(self, data: bytes, mark: tuple[int, str] | None = None) -> None:
        if data:
            self.wrote = True
            _write_all(self.fd, data)
            os.fsync(self.fd)
        if mark is not None and self.ledger >= 0:
            records, digest = mark
            size = os.fstat(self.fd).st_size
            line = {"records": records, "bytes": size, "sha256": digest}
            _write_all(self.ledger, (json.dumps(line) + "\n").encode("ascii"))
            os.fsync(self.ledger)

    def finish(self) -> None:
        os.fsync(self.fd)
        self.wrote = True  # the staging file is renamed, or removed below: not unlinked again
        if self.finisher is not None:
            self.finisher(self.partial, self.target)
            self.partial.unlink()
        else:
            try:
                mode = stat.S_IMODE(self.target.stat().st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~current_umask()
            os.chmod(self.partial, mode)
            os.replace(self.partial, self.target)
        fingerprint_path(self.target).unlink(missing_ok=True)

    def close(self) -> None:
        """An unfinished run keeps its staging file to resume from, unless it holds nothing."""
        if self.ledger >= 0:
            os.close(self.ledger)
            self.ledger = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if not self.wrote and self.done == 0:
                self.partial.unlink(missing_ok=True)
                fingerprint_path(self.target).unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@dataclass(frozen=True)
class OutputOptions:
    """How an output is opened.

    Fields:
        resume: go on after the records of an unfinished run's staging file.
        resumable: whether this output format can be resumed (one line per record).
        finisher: turns the staged JSONL into the final file (Parquet), or None.
        source: the input, recorded beside the staging file and checked on resume; None
            keeps no record (such a staging file cannot be resumed).
    """

    resume: bool = False
    resumable: bool = True
    finisher: Any = None
    source: InputIdentity | None = None


def open_output(path: str, options: OutputOptions) -> Sink:
    """The sink for ``path``: ``-`` or ``/dev/stdout``, a FIFO or device, or a staged file."""
    kind, target = output_kind(path)
    if options.resume and kind != "file":
        raise SmnerError(
            f"--resume needs an output file, and {path} is "
            + ("standard output" if kind == "stdout" else "a FIFO or device")
            + ": what was written there cannot be read back"
        )
    if options.resume and not options.resumable:
        raise SmnerError("--resume needs --format jsonl or a Parquet output (one record a line)")
    if options.finisher is not None and kind != "file":
        raise SmnerError(f"{path}: Parquet output needs a file to write")
    if kind == "stdout":
        return StdoutSink()
    assert target is not None
    if kind == "stream":
        return StreamSink(target)
    return _staged(target, options)


def _staged(target: Path, options: OutputOptions) -> Sink:
    partial = partial_path(target)
    ledger = fingerprint_path(target)
    staged = _regular_or_missing(partial, "the staging file")
    if not options.resume and staged:
        count, _ = complete_lines(partial)
        raise SmnerError(
            f"{partial} holds {count} records of an unfinished run: continue it with "
            "--resume, or delete it to start again"
        )
    if options.resume and not staged and target.exists():
        return CompleteOutput(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if options.resume and staged:
        found = _check_staged(partial, ledger, options.source)
        os.truncate(partial, found.size)  # a line torn by a kill, or a chunk not recorded
        fd = _open_regular(partial, os.O_WRONLY | os.O_APPEND, "the staging file")
        keep = _open_regular(ledger, os.O_WRONLY | os.O_APPEND, "the staging record")
        return StagedFileSink(
            target,
            partial,
            fd,
            found.records,
            options.finisher,
            ledger=keep,
            expected=found.digest,
        )
    if _regular_or_missing(ledger, "the staging record"):
        ledger.unlink()  # left by a run that finished before it could remove it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
    fd = _open_regular(partial, flags, "the staging file")
    keep = -1
    if options.source is not None:
        keep = _open_regular(ledger, flags, "the staging record")
        head = {
            "input": options.source.path,
            "size": options.source.size,
            "mtime_ns": options.source.mtime_ns,
        }
        _write_all(keep, (json.dumps(head, ensure_ascii=True) + "\n").encode("ascii"))
        os.fsync(keep)
    return StagedFileSink(target, partial, fd, 0, options.finisher, ledger=keep)


def _check_staged(partial: Path, ledger: Path, source: InputIdentity | None) -> Staged:
    """What ``partial`` holds, refused in one line unless it was made from ``source`` and
    holds only records (a last line torn by a kill is not one, and is cut)."""
    start_again = f"delete {partial} and {ledger.name} to start again"
    if source is None or not _regular_or_missing(ledger, "the staging record"):
        raise SmnerError(
            f"{partial}: no record of the input it was made from ({ledger.name} is missing); "
            f"{start_again}"
        )
    head, found, kept = _read_ledger(ledger, start_again)
    made_from = InputIdentity(head.get("input"), head.get("size"), head.get("mtime_ns"))
    if made_from.path != source.path:
        raise SmnerError(
            f"{partial} was made from {made_from.path}, not {source.path}: resume with that "
            f"input, or {start_again}"
        )
    if made_from != source:
        raise SmnerError(
            f"{partial}: {source.path} changed (size or modification time) since the staging "
            f"file was made from it; {start_again}"
        )
    size = partial.stat().st_size
    if size < found.size:
        raise SmnerError(
            f"{partial} holds {size} bytes, fewer than the {found.size} recorded in "
            f"{ledger.name}; {start_again}"
        )
    counted = 0 if found.size == 0 else None
    with _staged_lines(partial) as lines:
        for number, end, line in lines:
            if line is None:
                break  # the last line, torn by a kill
            if not _is_record(line):
                raise SmnerError(
                    f"{partial}: line {number} is not a JSON record, so this is not a staging "
                    f"file smner wrote; {start_again}"
                )
            if end == found.size:
                counted = number
    if counted != found.records:
        raise SmnerError(
            f"{partial} does not hold the {found.records} records in {found.size} bytes that "
            f"{ledger.name} recorded; {start_again}"
        )
    os.truncate(ledger, kept)
    return found


def _read_ledger(ledger: Path, start_again: str) -> tuple[dict[str, Any], Staged, int]:
    """The head of ``OUT.partial.input``, its last mark, and the bytes up to the end of that
    mark's line (a line torn by a kill after it is cut there before more are appended)."""
    head: dict[str, Any] | None = None
    found, end, number = Staged(), 0, 0
    with open(ledger, "rb") as handle:
        while raw := handle.readline(1 << 16):
            number += 1
            try:
                value = json.loads(raw) if raw.endswith(b"\n") else None
            except ValueError:
                value = None
            if head is None:
                head = value if isinstance(value, dict) else None
                if head is None:
                    break
            elif _is_mark(value):
                found = Staged(value["records"], value["bytes"], value["sha256"])
            elif handle.read(1):  # a torn last line is a kill; one before it is damage
                raise SmnerError(f"{ledger}: line {number} is damaged; {start_again}")
            else:
                break
            end += len(raw)
    if head is None:
        raise SmnerError(f"{ledger}: does not name an input; {start_again}")
    return head, found, end


def _is_mark(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("records"), int)
        and isinstance(value.get("bytes"), int)
        and isinstance(value.get("sha256"), str)
        and value["records"] >= 0
        and value["bytes"] >= 0
    )


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


@contextlib.contextmanager
def _staged_lines(path: Path) -> Iterator[Iterator[tuple[int, int, bytes | None]]]:
    """``(number, byte offset after it, line)`` of each line; None for a last line without a
    newline (torn), or for one too long to be a record."""

    def lines(handle: Any) -> Iterator[tuple[int, int, bytes | None]]:
        end = 0
        number = 0
        while raw := handle.readline(_MAX_STAGED_LINE + 1):
            number += 1
            end += len(raw)
            complete = raw.endswith(b"\n")
            if not complete and len(raw) > _MAX_STAGED_LINE:
                raise SmnerError(f"{path}: line {number} is too long to be a record")
            yield number, end, raw[:-1] if complete else None

    with open(path, "rb") as handle:
        yield lines(handle)
