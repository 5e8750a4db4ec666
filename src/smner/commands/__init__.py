"""One module per ``smner`` verb; each exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smner.errors import SmnerError


def positive_int(value: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def positive_float(value: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not (number > 0 and number != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def parse_aliases(pairs: list[str] | None) -> dict[str, str]:
    """``["OTHER=MISC"]`` -> ``{"OTHER": "MISC"}``."""
    aliases: dict[str, str] = {}
    for pair in pairs or []:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise SmnerError(f"--label-alias {pair!r}: expected FILE_LABEL=LABEL, e.g. OTHER=MISC")
        aliases[source] = target
    return aliases


def add_quantize_option(parser: argparse.ArgumentParser) -> None:
    """``--quantize int8|bf16``: reduced precision at prediction (see smner.model.quantize)."""
    parser.add_argument(
        "--quantize",
        choices=["int8", "bf16"],
        default=None,
        help="int8: the text encoder's linear layers in int8 (dynamic quantization; CPU "
        "only); bf16: the forward under bfloat16 autocast (fast on CPUs with AVX-512 BF16 or "
        "AMX, emulated and slower elsewhere). Speed and F1 change are measured in "
        "docs/BENCHMARKS.md (default: float32)",
    )


def add_input_limit_option(parser: argparse.ArgumentParser, streamed: bool = False) -> None:
    """``--max-input-mb``; ``streamed`` inputs are read a record at a time, so their default
    is no limit (memory does not grow with the file)."""
    from smner.data.conll import DEFAULT_MAX_FILE_MB

    default = None if streamed else DEFAULT_MAX_FILE_MB
    parser.add_argument(
        "--max-input-mb",
        type=positive_int,
        default=default,
        metavar="MB",
        help="refuse input files larger than this many MiB (default: "
        + ("no limit" if streamed else "%(default)s")
        + "); FIFOs and devices are never read",
    )


def add_alias_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--label-alias",
        action="append",
        metavar="FROM=TO",
        help="rename an entity type while reading, e.g. OTHER=MISC to align Twitter-2015 "
        "with Twitter-2017 (repeatable)",
    )


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model DIR|org/name`` and ``--revision`` (shared by predict, serve, evaluate)."""
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR|ORG/NAME",
        help="saved model folder, or a Hugging Face Hub repo id (needs smner[hub]; "
        "HF_HUB_OFFLINE=1 reads only the local cache)",
    )
    parser.add_argument(
        "--revision", metavar="REV", help="Hub branch, tag or commit of --model (default: main)"
    )


def model_folder(args: argparse.Namespace) -> Path:
    from smner.saved.hub import resolve_model_dir

    return resolve_model_dir(args.model, revision=args.revision)


def add_errors_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--errors",
        action="store_true",
        help="add where the errors are: each wrong prediction as a type, boundary, "
        "boundary-and-type or spurious error, the gold entities missed, the types confused, "
        "and recall by entity length and form (words, #hashtag, @mention)",
    )


def print_scores(
    scores: Any, parts: list[tuple[str, Any, Callable[[Any], str]]], as_json: bool
) -> None:
    """P/R/F1 and the optional ``(key, scores, formatter)`` parts beside them (None parts are
    left out): one JSON object, or the table then each part's lines."""
    from smner.evaluation.metrics import format_scores

    present = [(key, value, fmt) for key, value, fmt in parts if value is not None]
    if as_json:
        payload = scores.to_dict()
        payload.update({key: value.to_dict() for key, value, _ in present})
        print(json.dumps(payload, indent=2))
        return
    print(format_scores(scores))
    for _, value, fmt in present:
        print(fmt(value))
