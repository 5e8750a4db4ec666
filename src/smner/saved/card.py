"""Model cards: the ``README.md`` of a model folder, in the Hugging Face Hub's convention.

The card is generated, never edited by hand: YAML front matter (``library_name: smner``, tags,
language, license, datasets, metrics and a ``model-index`` with the dev score and, when the
run had a test file, the test score) and a body of facts. Every number comes from a file in
the folders: the model's ``config.json`` and ``model.safetensors``, and the facts of the run
that trained it, kept beside them in ``training.json`` (data files and their counts, images
found and missing, the command, the experiment config, the best epoch's dev scores per type)
and, for a run folder, its ``log.jsonl`` and ``test_scores.json``. ``smner card DIR``
regenerates the cards from those files; what they do not record the card does not state.
This module gathers the facts and writes the files; :mod:`smner.saved.card_render` writes the text.
"""

from __future__ import annotations

import json
import platform
import struct
from pathlib import Path
from typing import Any

import yaml

from smner.errors import SmnerError
from smner.fileio import InputFileError, atomic_write_text, read_input_bytes
from smner.saved.card_render import DEFAULT_LANGUAGE, DEFAULT_LICENSE, TAGS, card_name, render_card
from smner.version import __version__

__all__ = [
    "CARD_FILE",
    "DEFAULT_LANGUAGE",
    "DEFAULT_LICENSE",
    "FACTS_FILE",
    "LOG_FILE",
    "TAGS",
    "TEST_SCORES_FILE",
    "card_name",
    "check_facts",
    "data_facts",
    "environment",
    "parameter_count",
    "read_json",
    "read_log",
    "refresh_run_cards",
    "regenerate",
    "render_card",
    "run_facts",
    "write_model_card",
]

CARD_FILE = "README.md"
FACTS_FILE = "training.json"
LOG_FILE = "log.jsonl"
TEST_SCORES_FILE = "test_scores.json"
#: The largest card input read (a config, facts, log or card is a few hundred kB at most).
MAX_CARD_INPUT_BYTES = 64 * 2**20
#: The largest safetensors header read to count parameters (a real one is a few hundred kB).
MAX_HEADER_BYTES = 100 * 2**20


# --- facts ----------------------------------------------------------------------------------


def data_facts(path: str, stats: dict[str, Any]) -> dict[str, Any]:
    """What the card says of one data file, from :func:`smner.data.stats.corpus_stats`."""
    return {
        "file": path,
        "posts": stats["posts"],
        "tokens": stats["tokens"],
        "entities": stats["entities"],
        "entities_total": stats["entities_total"],
        "posts_with_image_id": stats["posts_with_image_id"],
        "longer_than_max_width": stats["longer_than_max_width"],
    }


def _read_text(path: Path) -> str:
    """A card input's text: a regular file of bounded size, in UTF-8, or one line saying why."""
    try:
        data = read_input_bytes(path, MAX_CARD_INPUT_BYTES, "model card input")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SmnerError(
            f"{path}: not UTF-8 text (byte {exc.start}); expected the file smner writes: fix "
            "or delete it"
        ) from None
    except InputFileError as exc:
        raise SmnerError(str(exc)) from None


def read_log(folder: Path) -> list[dict[str, Any]]:
    """The epoch records of ``log.jsonl``; a last line cut short by a kill is left out, any
    other line that is not an epoch record is an error naming it."""
    path = folder / LOG_FILE
    if not path.is_file():
        return []
    lines = _read_text(path).split("\n")  # records hold no newline; U+2028 is not one here
    if lines[-1] == "":
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):
                continue  # a line cut short by a kill
            record = None
        fix = "expected an epoch record as smner train writes it: fix or delete the line"
        _shaped(record, EPOCH, f"{path}: line {number}", fix)
        records.append(record)
    return records


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise SmnerError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise SmnerError(f"{path}: nested too deeply to be JSON that smner writes") from None
    return value if isinstance(value, dict) else None


def run_facts(run_dir: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """``facts`` of the best model, brought up to date with the run folder's files."""
    epochs = read_log(run_dir)
    updated = dict(facts)
    updated["epochs"] = epochs
    updated["epochs_run"] = len(epochs)
    # rounded once, to what the card shows (rounding to 0.01 first could move the shown digit)
    updated["training_seconds"] = round(sum(r.get("seconds", 0.0) for r in epochs), 1)
    updated["test"] = read_json(run_dir / TEST_SCORES_FILE)
    return updated


def parameter_count(weights: Path) -> int | None:
    """Parameters stored in a safetensors file, read from its header (no weights loaded);
    None when there is no file, one line saying why when the header is not one."""
    if not weights.is_file():
        return None
    bad = f"{weights}: not a valid safetensors file"
    try:
        with open(weights, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(MAX_HEADER_BYTES, weights.stat().st_size - 8):
                raise SmnerError(f"{bad} (a header of {length} bytes)")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SmnerError(f"{bad} (its header cannot be read)") from None
    if not isinstance(header, dict):
        raise SmnerError(f"{bad} (its header is not a JSON object)")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SmnerError(f"{bad} (tensor {name!r} has no shape of whole numbers)")
        count = 1
        for dim in shape:
            count *= dim
        total += count
    return total


# --- checking facts ---------------------------------------------------------------------------

_NUMBER = (int, float)
_SCORES: dict[str, Any] = {
    "precision": _NUMBER,
    "recall": _NUMBER,
    "f1": _NUMBER,
    "support": int,
    "per_type?": ("map", {"precision": _NUMBER, "recall": _NUMBER, "f1": _NUMBER, "support": int}),
    "image_summary?": str,
}
_SPLIT: dict[str, Any] = {
    "file": str,
    "posts": int,
    "tokens": int,
    "entities": ("map", int),
    "entities_total": int,
    "longer_than_max_width?": int,
}
EPOCH: dict[str, Any] = {
    "epoch": int,
    "dev_precision": _NUMBER,
    "dev_recall": _NUMBER,
    "dev_f1": _NUMBER,
    "seconds?": _NUMBER,
}
#: What a model card reads of ``training.json`` (other keys are kept and not read).
FACTS: dict[str, Any] = {
    "data": ("map", ("or none", _SPLIT)),
    "images?": ("map", ("map", int)),
    "config?": {"data?": dict, "model?": dict},
    "dev?": ("or none", _SCORES),
    "test?": ("or none", _SCORES),
    "epochs?": [EPOCH],
    "epochs_run?": int,
    "best_epoch?": ("or none", int),
    "training_seconds?": _NUMBER,
    "command?": ("or none", str),
    "environment?": dict,
}


class _Shape(ValueError):
    """A card input whose value at some place has another shape than smner writes."""


def _shaped(value: Any, kind: Any, where: str, fix: str) -> None:
    """:func:`_check`, its complaint made one line that ends with what to do."""
    try:
        _check(value, kind, where)
    except _Shape as exc:
        raise SmnerError(f"{exc}; {fix}") from None


def _check(value: Any, kind: Any, where: str) -> None:
    """Raise :class:`_Shape` naming ``where`` unless ``value`` has the shape ``kind``: a type or a
    tuple of types, ``{key: kind}`` (a key ending in ``?`` may be absent), ``[kind]`` (a
    list), ``("map", kind)`` (an object of any keys) or ``("or none", kind)``."""
    if isinstance(kind, dict):
        if not isinstance(value, dict):
            raise _Shape(f"{where}: expected an object, got {_name(value)}")
        for key, inner in kind.items():
            name = key.rstrip("?")
            if name in value:
                _check(value[name], inner, f"{where}.{name}")
            elif not key.endswith("?"):
                raise _Shape(f"{where}: {name!r} is missing")
    elif isinstance(kind, list):
        if not isinstance(value, list):
            raise _Shape(f"{where}: expected a list, got {_name(value)}")
        for i, item in enumerate(value):
            _check(item, kind[0], f"{where}[{i}]")
    elif isinstance(kind, tuple) and kind and kind[0] == "map":
        _check(value, dict, where)
        for key, item in value.items():
            _check(item, kind[1], f"{where}.{key}")
    elif isinstance(kind, tuple) and kind and kind[0] == "or none":
        if value is not None and value != {}:
            _check(value, kind[1], where)
    elif not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        raise _Shape(f"{where}: expected {_expected(kind)}, got {_name(value)}")


def _types(kind: Any) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _expected(kind: Any) -> str:
    names = {int: "a whole number", float: "a number", str: "a string", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in _types(kind))


def _name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


#: What a card reads of ``config.json``'s ``model`` section.
MODEL: dict[str, Any] = {
    "labels?": [str],
    "type?": ("or none", str),
    "max_span_width?": ("or none", int),
}


def check_model_section(model: dict[str, Any], where: str) -> None:
    """Refuse, in one line, a ``model`` section a card cannot be written from."""
    _shaped(model, MODEL, f"{where}: model", "expected the config.json smner saves")


def check_facts(facts: dict[str, Any], where: str) -> None:
    """Refuse, in one line naming the field, facts a card cannot be written from."""
    fix = f"{FACTS_FILE} is written by smner train: restore it, or delete it for a card without "
    fix += "run facts"
    _shaped(facts, FACTS, where, fix)
    data = facts["data"]
    for split in ("dev", "test"):
        if facts.get(split) and not data.get(split):
            raise SmnerError(f"{where}: {split} scores are given without data.{split}; {fix}")


def environment() -> dict[str, str]:
    """Versions that produced the folder."""
    import torch

    return {"smner": __version__, "torch": torch.__version__, "python": platform.python_version()}


# --- files ----------------------------------------------------------------------------------


def _front_matter_of(path: Path) -> dict[str, Any]:
    """The YAML front matter of an existing card, or {}."""
    if not path.is_file():
        return {}
    text = _read_text(path)
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end < 0:
        return {}
    try:
        meta = yaml.safe_load(text[4:end])
    except (yaml.YAMLError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _card_choices(folder: Path, language: str | None, license_name: str | None) -> tuple[str, str]:
    """Language and license: as given, else as in the folder's card, else the defaults."""
    old = _front_matter_of(folder / CARD_FILE)
    old_language = old.get("language")
    if isinstance(old_language, list) and old_language:
        old_language = old_language[0]
    return (
        language or (old_language if isinstance(old_language, str) else DEFAULT_LANGUAGE),
        license_name
        or (old.get("license") if isinstance(old.get("license"), str) else None)
        or DEFAULT_LICENSE,
    )


def write_model_card(
    folder: Path,
    facts: dict[str, Any] | None = None,
    language: str | None = None,
    license_name: str | None = None,
    card_folder: Path | None = None,
    name: str | None = None,
) -> Path:
    """Write ``README.md`` (and ``training.json`` when ``facts`` are given) into a model folder.

    ``card_folder`` is where the card goes when it is not the model folder itself (the run
    folder of ``smner train`` gets the card of its best model).
    """
    folder = Path(folder)
    target = Path(card_folder) if card_folder is not None else folder
    config = read_json(folder / "config.json")
    if config is None or not isinstance(config.get("model"), dict):
        raise SmnerError(f"{folder}: not a saved smner model (no config.json with a model)")
    check_model_section(config["model"], str(folder / "config.json"))
    if facts is not None:
        check_facts(facts, str(folder / FACTS_FILE))
    if facts is not None and card_folder is None:
        atomic_write_text(folder / FACTS_FILE, json.dumps(facts, indent=2) + "\n")
    language, license_name = _card_choices(target, language, license_name)
    parameters = parameter_count(folder / "model.safetensors")
    try:
        text = render_card(folder, config["model"], facts, language, license_name, parameters, name)
    except RecursionError:
        raise SmnerError(
            f"{folder / FACTS_FILE}: nested too deeply to be written into a card; restore it, "
            "or delete it for a card without run facts"
        ) from None
    atomic_write_text(target / CARD_FILE, text)
    return target / CARD_FILE


def refresh_run_cards(
    run_dir: Path, language: str | None = None, license_name: str | None = None
) -> list[Path]:
    """The cards of a run folder: its best model's (with the final log and test scores) and
    the run folder's own (the same text)."""
    best = run_dir / "best"
    facts = read_json(best / FACTS_FILE)
    if facts is not None:
        facts = run_facts(run_dir, facts)
    written = [write_model_card(best, facts, language, license_name)]
    if facts is not None:
        language, license_name = _card_choices(best, language, license_name)
        written.append(write_model_card(best, facts, language, license_name, card_folder=run_dir))
    return written


def regenerate(
    directory: str | Path, language: str | None = None, license_name: str | None = None
) -> list[Path]:
    """``smner card DIR``: a run folder (with ``best/``) or a model folder."""
    folder = Path(directory)
    if (folder / "best" / "config.json").is_file():
        return refresh_run_cards(folder, language, license_name)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        facts = read_json(folder / FACTS_FILE)
        return [write_model_card(folder, facts, language, license_name)]
    raise SmnerError(
        f"{folder}: neither a run folder of 'smner train' (with best/) nor a saved model "
        "folder (with config.json and model.safetensors)"
    )
