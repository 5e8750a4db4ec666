"""Reader for MNER-MI's JSONL (LREC-COLING 2024): posts with several images.

One post a line: ``{"id", "text": [tokens], "images": [file, ...], "label": [BIO tags],
"url"}``. The file's own labels are kept (MNER-MI says ``MIS`` where Twitter-2017 says
``MISC``; ``data.label_aliases`` maps one to the other, as for the CoNLL files). Each post
becomes an :class:`~smner.data.types.Example` whose ``image_ids`` are its images in order and
whose ``image_id`` is the first of them (what a one-image model sees). A broken record raises
:class:`~smner.errors.DataFormatError` naming the file and the line; nothing is guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smner.data.conll import Corpus, _apply_alias, read_conll, read_data_text
from smner.data.images import UnsafeImageIdError, check_image_id
from smner.data.spans import bio_to_entities
from smner.data.types import Example
from smner.errors import DataFormatError

#: a tag as the CoNLL reader takes it
_TAGS = ("O", "B-", "I-")


def _tag_ok(tag: Any) -> bool:
    return isinstance(tag, str) and (
        tag == "O" or (tag[:2] in _TAGS[1:] and len(tag) > 2 and not any(c.isspace() for c in tag))
    )


def parse_record(
    record: Any, path: str, number: int, aliases: Mapping[str, str], position: int
) -> Example:
    """The :class:`Example` of one decoded record; DataFormatError names ``path:number``."""

    def bad(message: str) -> DataFormatError:
        return DataFormatError(path, number, message)

    if not isinstance(record, dict):
        raise bad('expected an object with "text" (tokens), "label" (BIO tags) and "images"')
    tokens = record.get("text")
    if not (
        isinstance(tokens, list)
        and tokens
        and all(isinstance(t, str) and t.strip() for t in tokens)
    ):
        raise bad('"text" must be a non-empty list of tokens (non-blank strings)')
    tags = record.get("label")
    if not isinstance(tags, list) or len(tags) != len(tokens):
        found = f"{len(tags)} tags" if isinstance(tags, list) else "no list"
        raise bad(f'"label" must hold one BIO tag per token ({len(tokens)} tokens, {found})')
    for i, tag in enumerate(tags):
        if not _tag_ok(tag):
            raise bad(f"invalid tag {tag!r} at token {i}; expected O, B-<TYPE> or I-<TYPE>")
    images = record.get("images", [])
    if images is None:
        images = []
    if not (isinstance(images, list) and all(isinstance(i, str) for i in images)):
        raise bad('"images" must be a list of image file names')
    for image in images:
        try:
            check_image_id(image)
        except UnsafeImageIdError as exc:
            raise bad(f'{exc}; expected plain file names in "images"') from None
    post_id = record.get("id")
    if post_id is not None and not isinstance(post_id, str | int):
        raise bad('"id" must be a string or a number')
    aliased = [_apply_alias(t, aliases) for t in tags]
    return Example(
        tokens=list(tokens),
        tags=list(tags),
        image_id=images[0] if images else None,
        post_id=str(post_id) if post_id is not None else str(position),
        line=number,
        entities=bio_to_entities(aliased),
        image_ids=list(images),
    )


def parse_mnermi(
    text: str, path: str = "<string>", aliases: Mapping[str, str] | None = None
) -> Corpus:
    """The posts of an MNER-MI JSONL text (blank lines are skipped)."""
    aliases = dict(aliases or {})
    examples: list[Example] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, number, f"not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DataFormatError(path, number, "nested too deeply to be a post") from None
        examples.append(parse_record(record, path, number, aliases, len(examples) + 1))
    return Corpus(path=path, examples=examples, aliases=aliases)


def read_mnermi(
    path: str | Path, aliases: Mapping[str, str] | None = None, max_bytes: int | None = None
) -> Corpus:
    """Read an MNER-MI JSONL file (at most ``max_bytes``, default
    :data:`~smner.data.conll.DEFAULT_MAX_FILE_MB` MiB)."""
    return parse_mnermi(read_data_text(path, max_bytes), str(path), aliases)


def read_corpus(
    path: str | Path, aliases: Mapping[str, str] | None = None, max_bytes: int | None = None
) -> Corpus:
    """A training or evaluation data file in either format: MNER-MI's JSONL for a ``.jsonl``
    file, else the Twitter MNER (CoNLL) format."""
    if str(path).lower().endswith(".jsonl"):
        return read_mnermi(path, aliases, max_bytes)
    return read_conll(path, aliases, max_bytes)
