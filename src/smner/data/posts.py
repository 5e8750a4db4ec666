"""Posts as users have them, turned into one type, :class:`PostInput`, in one place.

The forms accepted everywhere (``Predictor.predict_many``, ``smner predict``, the HTTP API):

- a string: the raw text of a post, split by the tweet-aware tokenizer;
- a list of strings: the post's tokens, already split;
- a mapping with the keys of a JSONL record: ``text`` or ``tokens``, optionally ``image`` (a
  path, the file's bytes or a PIL image) or ``images`` (a list of them, for a post with
  several images), and ``id``; other keys are carried to the output;
- a :class:`PostInput`.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from smner.data.tweet_tokenizer import Token, tokenize_tweet
from smner.errors import DataFormatError, SmnerError

ImageLike = str | Path | bytes | Image.Image | None

#: What the error message says a post may be.
EXPECTED = (
    "a string (raw text), a list of token strings, a mapping with 'text' or 'tokens' "
    "(and optionally 'image' or 'images', and 'id'), or a PostInput"
)


class InvalidPost(SmnerError, TypeError):
    """A post is not one of the accepted forms; the message names its position.

    A :class:`TypeError` for Python callers, and an :class:`SmnerError` so that the command
    line reports it as one line.
    """


@dataclass
class PostInput:
    """A post to predict on.

    Fields:
        text: the raw text (split by the tweet-aware tokenizer), or None when ``tokens`` is set.
        tokens: the post's tokens, already split; they take precedence over ``text``.
        image: a path, the image file's bytes, a PIL image, or None.
        id: carried unchanged to the prediction (and its ``to_dict()`` record).
        extra: other keys of the input record, carried unchanged to the output record.
        images: the post's images when it has several (each as ``image`` takes it), in
            order; the prediction then has a status per image, and each entity the index of
            the image it is grounded in. Give ``image`` or ``images``, not both.
    """

    text: str | None = None
    tokens: list[str] | None = None
    image: ImageLike = None
    id: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    images: list[ImageLike] | None = None
    #: the split of the post's text (see :meth:`words`), kept with what it was made from
    _split: tuple[Any, list[Token]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.images is not None:
            if self.image is not None:
                raise InvalidPost("give a post 'image' or 'images', not both")
            self.images = list(self.images)

    def image_list(self) -> list[ImageLike] | None:
        """The post's images when it was given a list of them (``images``), else None."""
        return self.images

    def words(self) -> list[Token]:
        """The post's words with their character spans: the tweet-aware split of ``text``, or
        ``tokens`` at their offsets in the tokens joined by spaces. Split once per post,
        however many checks and predictions read it."""
        source = (self.text, tuple(self.tokens)) if self.tokens is not None else self.text
        if self._split is not None and self._split[0] == source:
            return self._split[1]
        if self.tokens is not None:
            if not all(isinstance(word, str) and word.strip() for word in self.tokens):
                raise SmnerError('a post\'s "tokens" must be a list of non-blank strings')
            spans, offset = [], 0
            for word in self.tokens:
                spans.append(Token(str(word), offset, offset + len(word)))
                offset += len(word) + 1
        elif self.text is not None:
            spans = tokenize_tweet(self.text)
        else:
            raise SmnerError("a post needs 'text' or 'tokens'")
        self._split = (source, spans)
        return spans

    def with_image(self, image: ImageLike) -> PostInput:
        """The same post with another image, keeping the split of its text (so a post that was
        checked before its image was decoded is not split again)."""
        post = PostInput(self.text, self.tokens, image, self.id, self.extra)
        post._split = self._split
        return post

    def with_images(self, images: list[ImageLike]) -> PostInput:
        """The same post with a list of images in place of its image(s)."""
        post = PostInput(self.text, self.tokens, None, self.id, self.extra, list(images))
        post._split = self._split
        return post

    def record(self) -> dict[str, Any]:
        """The input keys of the output record: ``id``, ``text``, the image path, ``extra``."""
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if self.text is not None:
            out["text"] = self.text
        if isinstance(self.image, str | Path):
            out["image"] = str(self.image)
        if self.images is not None and all(isinstance(i, str | Path) for i in self.images):
            out["images"] = [str(i) for i in self.images]
        out.update(self.extra)
        return out


def _check_tokens(tokens: Any, where: str) -> list[str]:
    if not (isinstance(tokens, list | tuple) and all(isinstance(t, str) for t in tokens)):
        raise InvalidPost(f'{where}: "tokens" must be a list of non-blank strings')
    if not all(t.strip() for t in tokens):
        raise InvalidPost(f'{where}: "tokens" must be a list of non-blank strings')
    return list(tokens)


def _check_image(image: Any, where: str) -> ImageLike:
    if image is None or isinstance(image, str | Path | bytes | Image.Image):
        return image
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    raise InvalidPost(
        f'{where}: "image" must be a path, bytes or a PIL image, got {type(image).__name__}'
    )


def _check_images(images: Any, where: str) -> list[ImageLike]:
    if not isinstance(images, list | tuple):
        raise InvalidPost(f'{where}: "images" must be a list of images')
    return [_check_image(image, f"{where}, image {i}") for i, image in enumerate(images)]


def from_mapping(record: Mapping[str, Any], where: str, base: Path | None = None) -> PostInput:
    """A post from a JSONL-style record; ``base`` is the folder relative image paths start at.

    With ``base``, the output record keeps the path as written in the input.
    """
    text, tokens = record.get("text"), record.get("tokens")
    if not isinstance(text, str) and tokens is None:
        raise InvalidPost(f'{where}: expected an object with "text" (string) or "tokens" (list)')
    if text is not None and not isinstance(text, str):
        raise InvalidPost(f'{where}: "text" must be a string')
    if tokens is not None:
        tokens = _check_tokens(tokens, where)
    image = _check_image(record.get("image"), where)
    images = None
    if record.get("images") is not None:
        if image is not None:
            raise InvalidPost(f'{where}: give "image" or "images", not both')
        images = _check_images(record["images"], where)
    keys = ("id", "text", "tokens", "image", "images")
    extra = {k: v for k, v in record.items() if k not in keys}
    if isinstance(image, str) and not image:
        image = None  # "image": "" means no image, as an empty form field does
    if base is not None and isinstance(image, str | Path) and not Path(image).is_absolute():
        extra["image"] = str(image)
        image = base / image
    if images is not None:
        images = [None if isinstance(i, str) and not i else i for i in images]
        relative = [isinstance(i, str | Path) and not Path(i).is_absolute() for i in images]
        if base is not None and any(relative):
            extra["images"] = [str(i) if i is not None else "" for i in images]
            images = [base / i if r else i for i, r in zip(images, relative, strict=True)]  # type: ignore[operator]
    return PostInput(
        text=text, tokens=tokens, image=image, id=record.get("id"), extra=extra, images=images
    )


def as_post(value: Any, position: int | str = 0) -> PostInput:
    """Any accepted form as a :class:`PostInput`; :class:`InvalidPost` names ``position``."""
    where = f"post {position}"
    if isinstance(value, PostInput):
        return value
    if isinstance(value, str):
        return PostInput(text=value)
    if isinstance(value, Mapping):
        return from_mapping(value, where)
    if isinstance(value, list | tuple):
        return PostInput(tokens=_check_tokens(value, where))
    raise InvalidPost(f"{where}: expected {EXPECTED}; got {type(value).__name__}")


def with_image(value: Any, image: ImageLike, images: list[ImageLike] | None = None) -> PostInput:
    """``predict(text, image=...)`` (or ``images=[...]``): the post, with ``image`` or
    ``images`` when one is given."""
    post = as_post(value)
    if image is not None and images is not None:
        raise InvalidPost("give 'image' or 'images', not both")
    if image is not None:
        post = post.with_image(_check_image(image, "image"))
    elif images is not None:
        post = post.with_images(_check_images(images, "images"))
    return post


#: The most tokens a post may have, unless a Predictor is built with another limit.
DEFAULT_MAX_TOKENS = 200

#: The longest JSONL line (one record) that is read; a longer one is a bad record, so that
#: a file without newlines cannot fill the memory.
MAX_RECORD_BYTES = 16 * 2**20


#: The most characters a post's text (or its tokens, with a space between each) may have, in
#: every input format: checked before the text is split, so that one huge record cannot turn
#: into millions of token objects. A tweet has at most 280.
MAX_TEXT_CHARS = 65_536


def text_size_problem(size: int, what: str = "text") -> str | None:
    """Why a post with ``size`` characters of ``what`` is refused, or None when it is not."""
    if size <= MAX_TEXT_CHARS:
        return None
    return (
        f"the post has {size} characters of {what}; expected at most {MAX_TEXT_CHARS} "
        "(split a longer document into several posts)"
    )


def check_text_size(post: PostInput) -> None:
    """SmnerError when the post is longer than :data:`MAX_TEXT_CHARS` (before any split)."""
    if post.tokens is not None:
        size = sum(len(token) for token in post.tokens) + max(len(post.tokens) - 1, 0)
        problem = text_size_problem(size, "tokens")
    else:
        problem = text_size_problem(len(post.text or ""))
    if problem:
        raise SmnerError(problem)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def post_words(
    post: PostInput, max_tokens: int = DEFAULT_MAX_TOKENS
) -> tuple[list[str], list[Token]]:
    """The post's words and their character spans, or SmnerError if a model cannot take it.

    A function of the post alone (no model), so that a reader can check every post before a
    model is loaded, or in a process that holds none.
    """
    check_text_size(post)
    for value in [post.text, *(post.tokens or [])]:
        if isinstance(value, str) and not _encodable(value):
            raise SmnerError(
                "the post holds a lone surrogate code point; expected text valid in UTF-8"
            )
    spans = post.words()
    words = [t.text for t in spans]
    if not words:
        raise SmnerError("the post has no tokens; expected non-empty text or tokens")
    if len(words) > max_tokens:
        raise SmnerError(f"the post has {len(words)} tokens; expected at most {max_tokens}")
    return words, spans


def _lone_surrogate(record: Mapping[str, Any]) -> str | None:
    """Which field holds a lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot hold it)."""
    for key in ("id", "text", "tokens", "image", "images"):
        values = record.get(key)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return f'"{key}" holds a lone surrogate code point'
    return None


def post_from_record(
    record: Any, path: str | Path, line: int | None, base: Path | None, where: str | None = None
) -> PostInput:
    """The post of one record read from a file, or :class:`DataFormatError` naming its place.

    ``line`` is the record's line (JSONL) or row (Parquet, with ``where`` saying ``row N``);
    a record without an ``id`` gets its number. Relative image paths start at ``base``.
    """

    def bad(message: str) -> DataFormatError:
        if where is not None:
            return DataFormatError(path, None, f"{where}: {message}")
        return DataFormatError(path, line, message)

    if not isinstance(record, dict):
        raise bad('expected an object with "text" (string) or "tokens" (list)')
    problem = _lone_surrogate(record)
    if problem:
        raise bad(f"{problem}; expected text valid in UTF-8")
    if record.get("image") is not None and not isinstance(record["image"], str):
        raise bad('"image" must be a path (string)')
    images = record.get("images")
    if images is not None and not (
        isinstance(images, list) and all(isinstance(i, str) for i in images)
    ):
        raise bad('"images" must be a list of paths (strings)')
    try:
        post = from_mapping(record, "record", base)
    except InvalidPost as exc:
        raise bad(str(exc).removeprefix("record: ")) from None
    if post.text is not None and post.tokens is not None:
        raise bad('give "text" or "tokens", not both')
    if post.id is None and line is not None:
        post.id = str(line)
    return post


def parse_jsonl_line(raw: bytes, path: str | Path, number: int, base: Path | None) -> PostInput:
    """The post of one JSONL line (bytes, without its newline); DataFormatError names the line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            path, number, f"invalid UTF-8 at byte {exc.start} of the line; expected UTF-8"
        ) from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, number, f"not valid JSON ({exc.msg})") from None
    return post_from_record(record, path, number, base)


def read_jsonl(path: str | Path, max_bytes: int | None = None) -> Iterator[tuple[int, PostInput]]:
    """``(line number, post)`` for each record of a JSONL file, read one line at a time.

    Relative image paths are read relative to the JSONL file's folder (absolute paths as
    they are); a record without an ``id`` gets its line number. A bad record raises
    :class:`DataFormatError` naming the file and the line. Only a regular file is read, of at
    most ``max_bytes`` when that is given.
    """
    from smner.fileio import open_input_file, read_lines

    base = Path(path).parent
    with open_input_file(path, max_bytes, "JSONL input", "--max-input-mb") as handle:
        for number, raw in read_lines(handle, MAX_RECORD_BYTES):
            if raw is None:
                raise DataFormatError(
                    path, number, f"the line is longer than {MAX_RECORD_BYTES} bytes"
                )
            if not raw.strip():
                continue
            yield number, parse_jsonl_line(raw, path, number, base)
