"""The ``smner`` command: one entry point, one module per verb under :mod:`smner.commands`."""

from __future__ import annotations

import argparse
import os
import sys
import typing
import warnings
from collections.abc import Sequence
from typing import Any

from smner.commands import card as card_command
from smner.commands import data as data_command
from smner.commands import demo as demo_command
from smner.commands import evaluate as evaluate_command
from smner.commands import export as export_command
from smner.commands import predict as predict_command
from smner.commands import score as score_command
from smner.commands import serve as serve_command
from smner.commands import synth as synth_command
from smner.commands import train as train_command
from smner.errors import SmnerError, SmnerWarning
from smner.version import __version__

DESCRIPTION = (
    "smner: span-based multimodal named entity recognition for social-media posts "
    "(text + image). Run 'smner VERB --help' for the options of each verb."
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smner", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"smner {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    train_command.register(verbs)
    evaluate_command.register(verbs)
    predict_command.register(verbs)
    score_command.register(verbs)
    synth_command.register(verbs)
    serve_command.register(verbs)
    demo_command.register(verbs)
    data_command.register(verbs)
    card_command.register(verbs)
    export_command.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print one line and exit non-zero, without a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is not an error here
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except SmnerError as exc:
        print(f"smner: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"smner: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("smner: interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    """stdout's reader closed it (``smner ... | head``): stop quietly, as a shell tool does.

    What is still buffered must not be flushed at exit into the closed pipe: stdout is
    pointed at /dev/null first. The status is 141 (killed by SIGPIPE), as for GNU tools.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _quiet_libraries() -> None:
    """Keep the command line's output to smner's own progress bars and messages.

    Environment variables rather than library calls: they cost nothing when a verb never
    imports transformers, and are read when it does (verbs import it lazily).
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    previous = warnings.formatwarning

    def one_line(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
        if issubclass(category, SmnerWarning):
            return f"smner: warning: {message}\n"
        return previous(message, category, *args, **kwargs)

    warnings.formatwarning = one_line  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main())
