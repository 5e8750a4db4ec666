"""Atomic writes: files and folders get the modes the umask asks for, as plain writes do."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import smner.fileio as fileio
from smner.fileio import atomic_write_text, current_umask, make_staging_dir, replace_directory


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_follows_the_umask(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "new\n")
    assert mode(target) == 0o644
    atomic_write_text(target, "again\n")  # a replaced file too
    assert mode(target) == 0o644 and target.read_text() == "again\n"


def test_atomic_rewrite_keeps_the_mode_of_the_file_it_replaces(
    tmp_path: Path, umask_022: None
) -> None:
    secret = tmp_path / "private.txt"
    secret.write_text("old\n")
    secret.chmod(0o600)
    atomic_write_text(secret, "new\n")
    assert mode(secret) == 0o600 and secret.read_text() == "new\n"


def test_replaced_directory_follows_the_umask(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "model"
    target.mkdir()
    staging = make_staging_dir(tmp_path, ".model.")
    (staging / "weights").write_bytes(b"x")
    replace_directory(staging, target)
    assert mode(target) == 0o755 and (target / "weights").read_bytes() == b"x"


def test_umask_is_read_without_changing_it(
    umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert current_umask() == 0o022

    def no_proc(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(fileio, "open", no_proc, raising=False)
    assert current_umask() == 0o022
    assert current_umask() == 0o022  # the fallback put the umask back


# --- what a write must never replace ---------------------------------------------------------


def test_dash_and_dev_stdout_write_to_standard_output(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write_text("-", "to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"
    assert not (tmp_path / "-").exists()
    atomic_write_text("/dev/stdout", "again\n")
    assert capfd.readouterr().out == "again\n"


def device_node(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device to write to: a private node as root (so a regression cannot
    replace the system's own), else the system's (which a non-root run cannot replace)."""
    if os.geteuid() == 0:
        node = tmp_path / name
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        return node
    return Path("/dev") / name


def test_character_device_is_written_through_not_replaced(tmp_path: Path) -> None:
    null = device_node(tmp_path, "null", 3)
    before = os.stat(null)
    atomic_write_text(null, "discarded\n")
    after = os.stat(null)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_full_device_gives_an_os_error_and_stays_a_device(tmp_path: Path) -> None:
    full = device_node(tmp_path, "full", 7)
    if not full.exists():
        pytest.skip("no /dev/full")
    with pytest.raises(OSError):
        atomic_write_text(full, "x" * 10000)
    assert stat.S_ISCHR(os.stat(full).st_mode)


def test_fifo_is_written_through(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    atomic_write_text(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"


def test_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "made.txt")
    atomic_write_text(link, "made\n")
    assert link.is_symlink() and (tmp_path / "made.txt").read_text() == "made\n"


def test_symlink_loop_and_folder_are_refused(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(fileio.OutputPathError, match="loop"):
        atomic_write_text(loop, "x")
    with pytest.raises(fileio.OutputPathError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


def test_writer_that_recreates_its_file_still_follows_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "w.safetensors"
    with fileio.atomic_path(target) as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))  # safetensors writes 0600 by itself
    assert mode(target) == 0o644
