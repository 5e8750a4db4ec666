"""Writing predictions a chunk at a time: to standard output or a FIFO at once, or to a file
through a staging file that a killed run can be resumed from.

A file output ``OUT`` is written to ``OUT.partial`` beside it: each chunk is appended with one
write and made durable (fsync) before the next is read, and the finished file replaces
``OUT`` in one rename (a Parquet ``OUT`` is converted from the staged JSONL at the end), so a
reader never sees half an output. After a kill, ``OUT.partial`` holds every finished record;
``--resume`` cuts away a last line torn by the kill, counts the complete ones and goes on
after them.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smner.errors import SmnerError
from smner.fileio import current_umask, output_kind

#: Bytes read at a time when counting the lines of a staging file.
_BLOCK = 1 << 20


def partial_path(target: Path) -> Path:
    """Where the output ``target`` is staged until the run ends."""
    return target.with_name(target.name + ".partial")


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

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once, after the last chunk, when the run has succeeded."""

    def close(self) -> None:
        """Called always, last: release what is open; an unfinished output stays staged."""


class StdoutSink(Sink):
    """Standard output: each chunk written and flushed at once (``| head`` sees it)."""

    def write(self, data: bytes) -> None:
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

    def write(self, data: bytes) -> None:
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
    """

    target: Path
    partial: Path
    fd: int
    done: int = 0
    finisher: Any = None
    wrote: bool = False

    @property
    def where(self) -> str:  # type: ignore[override]
        return str(self.target)

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.wrote = True
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)

    def finish(self) -> None:
        os.fsync(self.fd)
        self.wrote = True  # the staging file is renamed, or removed below: not unlinked again
        if self.finisher is not None:
            self.finisher(self.partial, self.target)
            self.partial.unlink()
            return
        try:
            mode = stat.S_IMODE(self.target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        os.chmod(self.partial, mode)
        os.replace(self.partial, self.target)

    def close(self) -> None:
        """An unfinished run keeps its staging file to resume from, unless it holds nothing."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            if not self.wrote and self.done == 0:
                self.partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class OutputOptions:
    """How an output is opened.

    Fields:
        resume: go on after the records of an unfinished run's staging file.
        resumable: whether this output format can be resumed (one line per record).
        finisher: turns the staged JSONL into the final file (Parquet), or None.
    """

    resume: bool = False
    resumable: bool = True
    finisher: Any = None


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
    if not options.resume and partial.exists():
        count, _ = complete_lines(partial)
        raise SmnerError(
            f"{partial} holds {count} records of an unfinished run: continue it with "
            "--resume, or delete it to start again"
        )
    if options.resume and not partial.exists() and target.exists():
        return CompleteOutput(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    if options.resume and partial.exists():
        done, end = complete_lines(partial)
        os.truncate(partial, end)  # a line torn by a kill is not a record
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    return StagedFileSink(target, partial, fd, done, options.finisher)
