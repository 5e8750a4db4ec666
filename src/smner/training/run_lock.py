"""An exclusive lock on a run folder, so that two trainings never write into the same one.

The lock is ``DIR/run.lock``, held with ``flock`` for as long as the run lasts, and holding the
PID, host and start time of its owner; a run that ends removes it. The kernel drops a ``flock``
when its process dies, so a lock file left by a killed run is stale by construction: the next
run takes it over (and says so).
Where ``flock`` is not supported (some network file systems) the PID in the file decides: the
lock is held while a process with that PID is alive on the same host.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from smner.errors import SmnerError

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "run.lock"


class RunLockedError(SmnerError):
    """Another run holds the folder's lock."""


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"PID {owner.get('pid', '?')} on {owner.get('host', '?')}, started {when}"


def _read_owner(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        owner = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive_here(owner: dict[str, Any]) -> bool:
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


class RunLock:
    """``with RunLock(folder):`` holds the folder for this process, or raises
    :class:`RunLockedError` naming the run that holds it. ``stale`` describes the owner of a
    lock this process took over from a run that ended without releasing it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.stale: str | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = self._try(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666))
            # The owner removes the file as it ends: a lock taken on a file that has been
            # removed (or replaced) meanwhile holds nothing, so take it again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._write_owner(fd)
        self._fd = fd
        return self

    def _try(self, fd: int) -> int:
        try:
            previous = _read_owner(fd)
            locked_by_kernel = False
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked_by_kernel = True
                except BlockingIOError:
                    raise RunLockedError(
                        f"{self.folder}: another smner train is using this run folder "
                        f"({_describe(_read_owner(fd))}); wait for it to end or choose "
                        "another --output"
                    ) from None
                except OSError:
                    pass  # flock not supported here: fall back on the PID
            if not locked_by_kernel and _alive_here(previous):
                raise RunLockedError(
                    f"{self.folder}: another smner train is using this run folder "
                    f"({_describe(previous)}); wait for it to end or choose another --output"
                )
            if previous.get("pid") is not None:
                self.stale = _describe(previous)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _write_owner(fd: int) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(owner) + "\n").encode("utf-8"))

    def release(self) -> None:
        """Remove the file, then drop the lock (a run waiting on the old file sees it gone)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
