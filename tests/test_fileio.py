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
