"""Atomic file writes: a reader never sees half a file, and a crash never leaves one behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from smner.errors import SmnerError


def current_umask() -> int:
    """The process umask, read from ``/proc`` where it can be.

    Elsewhere it can only be read by setting it, which for an instant applies to every thread;
    it is put back at once.
    """
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_staging_dir(parent: Path, prefix: str) -> Path:
    """A new temporary folder in ``parent``, with the mode ``mkdir`` would give it.

    ``mkdtemp`` makes it 0700, and a rename keeps that: saved models would be unreadable to
    other users whatever the umask says.
    """
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(staging, 0o777 & ~current_umask())
    return staging


#: Output names that mean standard output rather than a file.
STDOUT_NAMES = ("-", "/dev/stdout")


class OutputPathError(SmnerError):
    """An output path that cannot be written safely (a folder, a socket, a symlink loop)."""


def output_kind(path: str | Path) -> tuple[str, Path | None]:
    """How a write to ``path`` goes: ``("stdout", None)``, ``("stream", p)`` or ``("file", p)``.

    ``-`` and ``/dev/stdout`` are standard output. A symlink is followed, so the file it names
    is what gets written (the link itself stays). A FIFO or a character device (``/dev/null``, a
    terminal) is a ``stream``: it is written through, never replaced. A regular file or a new
    path is a ``file``, replaced atomically. Anything else (a folder, a socket, a block
    device) raises :class:`OutputPathError`.
    """
    if str(path) in STDOUT_NAMES:
        return "stdout", None
    try:
        target = Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before 3.13)
        raise OutputPathError(f"{path}: cannot resolve the path ({exc})") from None
    try:
        info = target.stat()
    except FileNotFoundError:
        return "file", target
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot write ({exc.strerror or exc})") from None
    if stat.S_ISREG(info.st_mode):
        return "file", target
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
        return "stream", target
    what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file, FIFO or device"
    raise OutputPathError(f"{path}: is {what}; expected a file to write")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success its content lands at ``path`` in one step.

    For a regular file or a new path, the temporary file sits beside the target and replaces
    it with one rename; it keeps the mode of the file it replaces, or gets the mode ``open``
    would give a new file (``mkstemp`` alone makes it 0600, and some writers, safetensors
    among them, recreate it as 0600: the mode is applied again after writing). On an
    exception the temporary file is removed and ``path`` is left as it was.

    Standard output (``-``, ``/dev/stdout``), FIFOs and character devices are never replaced:
    the finished content is copied into them. See :func:`output_kind` for symlinks and the
    paths refused.
    """
    kind, target = output_kind(path)
    if kind != "file":
        with tempfile.TemporaryDirectory(prefix="smner-") as folder:
            tmp = Path(folder) / "output"
            tmp.touch()
            yield tmp
            _copy_into_stream(tmp, target)
        return
    assert target is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        os.chmod(tmp, mode)
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_into_stream(source: Path, target: Path | None) -> None:
    """Write ``source``'s bytes to standard output (``target`` None) or into a FIFO/device."""
    if target is None:
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        with open(source, "rb") as handle:
            if buffer is None:  # a text-only stand-in for stdout
                sys.stdout.write(handle.read().decode("utf-8", errors="replace"))
                return
            shutil.copyfileobj(handle, buffer)
        buffer.flush()
        return
    with open(source, "rb") as handle, open(target, "wb") as out:
        shutil.copyfileobj(handle, out)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_directory(staging: Path, target: Path) -> None:
    """Swap a fully written ``staging`` folder in for ``target``.

    The old folder is first renamed aside, then the new one renamed in, then the old one
    deleted: at every moment either the old or the new complete folder sits at a known name
    (``target`` or ``target`` + ``.old``), never a partial one.
    """
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)


# --- reading whole input files ---------------------------------------------------------------


class InputFileError(SmnerError):
    """An input file that is missing, not a regular file, or larger than its limit."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_input_bytes(
    path: str | Path, max_bytes: int, what: str = "input", option: str | None = None
) -> bytes:
    """The whole content of a regular file of at most ``max_bytes`` bytes.

    A folder, a FIFO or a device is refused before it is opened (``/dev/zero`` never ends, a
    FIFO without a writer never starts), and so is a file over the limit; ``option`` names
    the setting that raises the limit in the message.
    """
    _size, too_large = check_input_file(path, max_bytes, what, option)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)  # the file may grow after stat()
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise InputFileError(path, too_large)
    return data


# --- reading input files line by line ---------------------------------------------------------


class _BoundedReader:
    """A binary file that raises :class:`InputFileError` once more than ``limit`` bytes are read
    (the file may grow after the size was checked)."""

    def __init__(self, handle: BinaryIO, path: str | Path, limit: int | None, too_large: str):
        self._handle = handle
        self._path = path
        self._left = limit
        self._too_large = too_large

    def readline(self, size: int = -1) -> bytes:
        data = self._handle.readline(size)
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                raise InputFileError(self._path, self._too_large)
        return data

    def close(self) -> None:
        self._handle.close()


def check_input_file(
    path: str | Path, max_bytes: int | None, what: str, option: str | None
) -> tuple[int, str]:
    """``(size, message for too large)`` of a regular file, or :class:`InputFileError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(path, f"is a folder; expected a {what} file")
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            path, f"is not a regular file (a FIFO, socket or device); expected a {what} file"
        )
    raise_it = f" (raise it with {option})" if option else ""
    too_large = f"larger than the limit of {max_bytes} bytes for a {what} file{raise_it}"
    if max_bytes is not None and info.st_size > max_bytes:
        raise InputFileError(path, too_large)
    return info.st_size, too_large


@contextlib.contextmanager
def open_input_file(
    path: str | Path, max_bytes: int | None, what: str = "input", option: str | None = None
) -> Iterator[Any]:
    """A regular file opened for reading line by line, refused as :func:`read_input_bytes`
    refuses it (a folder, FIFO or device; over ``max_bytes``, when that is not None)."""
    _size, too_large = check_input_file(path, max_bytes, what, option)
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, after the caller is done)
    except OSError as exc:
        raise InputFileError(path, f"cannot read ({exc.strerror or exc})") from None
    reader = _BoundedReader(handle, path, max_bytes, too_large)
    try:
        yield reader
    finally:
        reader.close()


def read_lines(handle: Any, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """``(number, line without its newline)`` for each line of a binary stream, one at a time.

    A line longer than ``max_line_bytes`` is given as None and skipped up to its end without
    being held, so that memory stays bounded whatever the input (a file without newlines).
    """
    number = 0
    while True:
        raw = handle.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = handle.readline(max_line_bytes)
            yield number, None
            continue
        yield number, raw.rstrip(b"\n").removesuffix(b"\r")
