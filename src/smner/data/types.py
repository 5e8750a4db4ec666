"""Plain value types shared by the reader, the model and the scorer.

Token offsets are 0-based and ``end`` is exclusive, as in Python slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, order=True)
class Entity:
    """A typed entity span ``tokens[start:end]``; ``type`` is its entity type (``PER``), the
    name every output (JSONL, the HTTP API, data frames) gives it too."""

    start: int
    end: int
    type: str

    @property
    def label(self) -> str:
        """``type``, by its name in smner 0.1.0."""
        return self.type

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class Example:
    """One post: its tokens, optional gold BIO tags and optional image id.

    ``line`` is the 1-based line of the file where the post starts, so that later errors
    about this post can point at it.
    """

    tokens: list[str]
    tags: list[str] | None = None
    image_id: str | None = None
    post_id: str = ""
    line: int = 0
    entities: list[Entity] = field(default_factory=list)
    #: every image of a post that has several (MNER-MI), in order; ``image_id`` is the first
    image_ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def token_line(self, index: int) -> int:
        """Line of token ``index`` in the post's file (after the ``IMGID`` line, if any)."""
        return self.line + (1 if self.image_id is not None else 0) + index
