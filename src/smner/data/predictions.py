"""What a prediction returns: a :class:`PostPrediction` per post, holding :class:`Mention` objects,
or a :class:`FailedPost` that keeps the post's place when it could not be predicted.

These are plain data: every output (Python objects, JSONL records, the HTTP schema, the page)
is made from them, and every layer above the data may hand them on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from smner.data.images import ImageStatus
from smner.data.posts import PostInput

__all__ = ["ErrorPolicy", "FailedPost", "Mention", "PostPrediction"]


@dataclass
class Mention:
    """One predicted entity, as every output gives it: this object in Python, one item of a
    JSONL record's ``entities`` (:meth:`to_dict`), and the HTTP API's entity schema (made
    from these fields and their descriptions)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"use_attribute_docstrings": True}

    text: str
    """The entity as written in the post (tokens joined by spaces for token input)."""
    type: str
    """Its entity type, one of the model's labels (e.g. PER)."""
    start: int
    """Its first token, 0-based."""
    end: int
    """The token after its last one (exclusive)."""
    char_start: int
    """Its first character (Unicode code point, as Python counts), 0-based; for token input,
    in the tokens joined by spaces."""
    char_end: int
    """The character after its last one (exclusive)."""
    score: float
    """The model's probability for this type of this span, in [0, 1]."""
    attention: list[list[float]] | None = None
    """[h][w] attention over the image's grid of regions; null without an image or
    cross-attention."""
    global_attention: float | None = None
    """The attention on the image as a whole (the global visual token); ``attention`` holds
    the rest."""
    box: list[float] | None = None
    """[x0, y0, x1, y1] of the entity in the image as shown (EXIF rotation applied), in its
    pixels; null when the model says it is not in the image, or does not ground."""
    box_score: float | None = None
    """The probability that the entity is in the image (models with a grounding head, posts
    with an image); null otherwise."""
    image_index: int | None = None
    """For a post given a list of images: the image (0-based, in the list's order) the entity
    is grounded in, the one its attention looked at most; ``attention`` and ``box`` are over
    that image. Null for a post given one image (or none)."""

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        """The entity as in ``smner predict``'s JSONL (``explain`` adds the attention); the
        ``box`` and ``box_score`` keys are there when the model grounds and the post has an
        image."""
        record: dict[str, Any] = {
            "text": self.text,
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "score": round(self.score, 6),
        }
        if self.box_score is not None:
            record["box"] = self.box
            record["box_score"] = self.box_score
        if self.image_index is not None:
            record["image_index"] = self.image_index
        if explain:
            record["attention"] = self.attention
            record["global_attention"] = self.global_attention
        return record


@dataclass
class PostPrediction:
    """The prediction for one post.

    Fields:
        tokens: the post's tokens (as split by the tokenizer, or as given).
        entities: the :class:`Mention` objects found, in token order, non-overlapping.
        image_status: what happened to the post's image (an :class:`ImageStatus`, a string
            enum: ``"ok"``, ``"no image"``, ``"ignored (text-only model)"``, or why the image
            was not used: ``"missing"``, ``"unreadable"``, ``"truncated"``, ``"too large"``).
        id: the input's ``id``, unchanged (None when it had none).
        extra: the input record's keys (``id``, ``text``, ``image`` path, any other keys),
            which :meth:`to_dict` puts first in the output record.
        image_statuses: for a post given a list of images (``images``), what happened to each
            one, in order (``image_status`` is then ``ok`` when any image was used); None for
            a post given one image or none, whose record has no such key.
    """

    tokens: list[str]
    entities: list[Mention]
    image_status: ImageStatus
    extra: dict[str, Any] = field(default_factory=dict)
    id: Any = None
    image_statuses: list[ImageStatus] | None = None

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        """Exactly the record ``smner predict`` writes as one JSONL line for this post."""
        status = ImageStatus(self.image_status).value
        record: dict[str, Any] = {**self.extra, "tokens": self.tokens, "image_status": status}
        if self.image_statuses is not None:
            record["image_statuses"] = [ImageStatus(s).value for s in self.image_statuses]
        record["entities"] = [m.to_dict(explain) for m in self.entities]
        return record


ErrorPolicy = Literal["raise", "record"]


@dataclass
class FailedPost:
    """A post that could not be predicted, in its place among the predictions.

    Fields:
        error: why, in one line (with the file and line when the post came from a file).
        extra: the input record's keys (``id``, ``text``, ``image`` path, any other keys), put
            first in the output record as for a prediction.
        id: the input's ``id`` (None when it had none).
    """

    error: str
    extra: dict[str, Any] = field(default_factory=dict)
    id: Any = None

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        """The output record: the input's keys and ``error`` (no ``entities``: none were
        predicted, which an empty list would not say)."""
        return {**self.extra, "error": self.error}

    @classmethod
    def of(cls, post: PostInput, error: str) -> FailedPost:
        return cls(error=error, extra=post.record(), id=post.id)
