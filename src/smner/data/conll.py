"""Reader and writer for the Twitter MNER format (and plain two-column CoNLL).

The format: a line ``IMGID:<id>`` opens a post, then one ``token<TAB>tag`` line per token with
BIO tags, and a blank line between posts. The ``IMGID`` line is optional (plain CoNLL). A post
of several images names them all on its line, separated by spaces (``IMGID:<id1> <id2>``,
smner's own multi-image format; the first is the image of a one-image model). The
reader refuses broken input with a :class:`~smner.errors.DataFormatError` that names the file,
the line and what was expected; it never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from smner.data.images import UnsafeImageIdError, check_image_id
from smner.data.spans import bio_to_entities, entities_to_bio
from smner.data.types import Entity, Example
from smner.errors import DataFormatError
from smner.fileio import InputFileError, atomic_write_text, read_input_bytes

IMGID_PREFIX = "IMGID:"
_TAG_RE = re.compile(r"^(?:O|[BI]-\S+)$")


@dataclass(slots=True)
class Corpus:
    """The posts of one file, plus what is needed to write the file back unchanged."""

    path: str
    examples: list[Example]
    final_blank_line: bool = True
    aliases: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    @property
    def labels(self) -> list[str]:
        """Sorted entity types found in the file (after aliasing)."""
        return sorted({e.type for ex in self.examples for e in ex.entities})


def _decode(data: bytes, path: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            path, line, f"invalid UTF-8 at byte {exc.start}; expected UTF-8 text"
        ) from None
    return text.removeprefix("\ufeff")


def _apply_alias(tag: str, aliases: Mapping[str, str]) -> str:
    if tag == "O" or not aliases:
        return tag
    return f"{tag[:2]}{aliases.get(tag[2:], tag[2:])}"


def parse_conll(
    text: str, path: str = "<string>", aliases: Mapping[str, str] | None = None
) -> Corpus:
    """Parse the text of a data file; see the module docstring for the format."""
    aliases = dict(aliases or {})
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    image_id: str | None = None
    image_ids: list[str] | None = None
    start_line = 0
    open_post = False

    def close_post() -> None:
        nonlocal tokens, tags, image_id, image_ids, open_post
        if not tokens:
            raise DataFormatError(
                path, start_line, "post has no tokens; expected token<TAB>tag lines"
            )
        aliased = [_apply_alias(t, aliases) for t in tags]
        examples.append(
            Example(
                tokens=tokens,
                tags=tags,
                image_id=image_id,
                post_id=image_id if image_id is not None else str(len(examples) + 1),
                line=start_line,
                entities=bio_to_entities(aliased),
                image_ids=image_ids,
            )
        )
        tokens, tags, image_id, image_ids, open_post = [], [], None, None, False

    lone_cr = text.replace("\r\n", "\n").find("\r")
    if lone_cr >= 0:
        line = text.replace("\r\n", "\n").count("\n", 0, lone_cr) + 1
        raise DataFormatError(
            path,
            line,
            "carriage return (CR) without a line feed; expected LF or CRLF line endings "
            "(convert CR-only files with: tr '\\r' '\\n')",
        )
    lines = text.split("\n")
    final_blank = len(lines) >= 2 and lines[-1] == "" and lines[-2].rstrip() == ""
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip()
        if not line:
            if open_post:
                close_post()
            continue
        if line.startswith(IMGID_PREFIX):
            if open_post:
                close_post()
            named = line[len(IMGID_PREFIX) :].split()
            if not named:
                raise DataFormatError(path, number, "empty image id; expected IMGID:<id>")
            for each in named:
                try:
                    check_image_id(each)
                except UnsafeImageIdError as exc:
                    raise DataFormatError(
                        path, number, f"{exc}; expected IMGID:<id> with a plain file name as <id>"
                    ) from None
            image_id = named[0]
            image_ids = named if len(named) > 1 else None
            start_line, open_post = number, True
            continue
        if line.startswith("-DOCSTART-"):
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2 or not parts[0]:
            found = "a token without a tag" if len(parts) == 1 else f"{len(parts)} columns"
            raise DataFormatError(
                path, number, f"expected 'token<TAB>tag' or 'IMGID:<id>', found {found}"
            )
        # Tokens are kept verbatim: the benchmarks contain tokens such as a lone U+00A0.
        token, tag = parts[0], parts[1].strip()
        if not _TAG_RE.match(tag):
            raise DataFormatError(
                path, number, f"invalid tag {tag!r}; expected O, B-<TYPE> or I-<TYPE>"
            )
        if not open_post:
            start_line, open_post = number, True
        tokens.append(token)
        tags.append(tag)
    if open_post:
        close_post()
    return Corpus(path=path, examples=examples, final_blank_line=final_blank, aliases=aliases)


#: Largest data file read unless the caller says otherwise (the benchmarks are a few MB);
#: ``--max-input-mb`` on the command line and ``data.max_file_mb`` in configs change it.
DEFAULT_MAX_FILE_MB = 1024


def read_conll(
    path: str | Path,
    aliases: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
) -> Corpus:
    """Read a data file. Raises :class:`DataFormatError` (file, line, expectation) if broken.

    Only a regular file of at most ``max_bytes`` bytes (default :data:`DEFAULT_MAX_FILE_MB`
    MiB) is read: a FIFO, a device or a larger file is refused before reading.
    """
    return parse_conll(read_data_text(path, max_bytes), str(path), aliases)


def read_data_text(path: str | Path, max_bytes: int | None = None) -> str:
    """A data file's text: a regular file of at most ``max_bytes`` bytes (default
    :data:`DEFAULT_MAX_FILE_MB` MiB) in UTF-8, or :class:`DataFormatError` saying why not."""
    path_str = str(path)
    limit = DEFAULT_MAX_FILE_MB * 2**20 if max_bytes is None else max_bytes
    try:
        data = read_input_bytes(path, limit, "data", "--max-input-mb or data.max_file_mb")
    except InputFileError as exc:
        raise DataFormatError(path_str, None, exc.problem) from None
    return _decode(data, path_str)


def format_conll(
    examples: Iterable[Example],
    tags_of: Iterable[Sequence[str]] | None = None,
    final_blank_line: bool = True,
) -> str:
    """Text of a data file; ``tags_of`` overrides each post's tags (for prediction files)."""
    posts: list[str] = []
    tag_lists = iter(tags_of) if tags_of is not None else None
    for example in examples:
        tags = next(tag_lists) if tag_lists is not None else example.tags
        if tags is None:
            tags = ["O"] * len(example.tokens)
        if len(tags) != len(example.tokens):
            raise ValueError(f"post {example.post_id}: {len(tags)} tags for {len(example)} tokens")
        named = (
            " ".join(example.image_ids)
            if example.image_ids is not None and len(example.image_ids) > 1
            else example.image_id
        )
        head = f"{IMGID_PREFIX}{named}\n" if named is not None else ""
        body = "".join(f"{tok}\t{tag}\n" for tok, tag in zip(example.tokens, tags, strict=True))
        posts.append(head + body)
    text = "\n".join(posts)
    return text + "\n" if final_blank_line and posts else text


def write_conll(path: str | Path, corpus: Corpus) -> None:
    """Write a corpus back in its own format (a well-formed file round-trips byte for byte)."""
    atomic_write_text(path, format_conll(corpus.examples, final_blank_line=corpus.final_blank_line))


def _original_labels(
    aliases: Mapping[str, str], examples: Iterable[Example], predicted: set[str]
) -> dict[str, str]:
    """Map each alias target back to the file's own label, where that is unambiguous.

    Empty when two labels share a target, when a target is also a label the file uses under
    its own name, or when the model itself predicts an alias source (a model trained without
    the aliases): then a written label could stand for either.
    """
    targets = set(aliases.values())
    if len(targets) != len(aliases):
        return {}
    kept = {t[2:] for ex in examples for t in ex.tags or () if t != "O"} - set(aliases)
    if targets & kept or predicted & {s for s, t in aliases.items() if s != t}:
        return {}
    return {target: source for source, target in aliases.items()}


def write_predictions(
    path: str | Path,
    examples: Sequence[Example],
    predictions: Sequence[Iterable[Entity]],
    aliases: Mapping[str, str] | None = None,
) -> None:
    """Write predicted entities as BIO tags in the data format, one post per gold post.

    With the ``aliases`` the examples were read with, labels are written under the file's own
    names (see :func:`_original_labels`), so the file scores against its gold file as is.
    """
    predictions = [list(entities) for entities in predictions]
    predicted = {e.type for entities in predictions for e in entities}
    names = _original_labels(aliases or {}, examples, predicted)
    tag_lists = [
        entities_to_bio(
            [replace(e, type=names.get(e.type, e.type)) for e in entities], len(example)
        )
        for example, entities in zip(examples, predictions, strict=True)
    ]
    atomic_write_text(path, format_conll(examples, tag_lists))
