"""Errors that the command line shows as one readable line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class SmnerError(Exception):
    """Base class for every error caused by user input or environment, not by a bug."""


class SmnerWarning(UserWarning):
    """Something the user should know that does not stop the command; shown as one line."""


class DataFormatError(SmnerError):
    """A data file does not follow the expected format; names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MissingExtra(SmnerError, ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""
