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
from smner.fileio import atomic_write_text
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


def read_log(folder: Path) -> list[dict[str, Any]]:
    path = folder / LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return records


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmnerError(f"{path}: not valid JSON ({exc})") from None
    return value if isinstance(value, dict) else None


def run_facts(run_dir: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """``facts`` of the best model, brought up to date with the run folder's files."""
    epochs = read_log(run_dir)
    updated = dict(facts)
    updated["epochs"] = epochs
    updated["epochs_run"] = len(epochs)
    updated["training_seconds"] = round(sum(r.get("seconds", 0.0) for r in epochs), 2)
    updated["test"] = read_json(run_dir / TEST_SCORES_FILE)
    return updated


def parameter_count(weights: Path) -> int | None:
    """Parameters stored in a safetensors file, read from its header (no weights loaded)."""
    try:
        with open(weights, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError):
        return None
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        total += count
    return total


def environment() -> dict[str, str]:
    """Versions that produced the folder."""
    import torch

    return {"smner": __version__, "torch": torch.__version__, "python": platform.python_version()}


# --- files ----------------------------------------------------------------------------------


def _front_matter_of(path: Path) -> dict[str, Any]:
    """The YAML front matter of an existing card, or {}."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end < 0:
        return {}
    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
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
    if facts is not None and card_folder is None:
        atomic_write_text(folder / FACTS_FILE, json.dumps(facts, indent=2) + "\n")
    language, license_name = _card_choices(target, language, license_name)
    text = render_card(
        folder,
        config["model"],
        facts,
        language,
        license_name,
        parameter_count(folder / "model.safetensors"),
        name,
    )
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
