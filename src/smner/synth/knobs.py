"""The generated corpus's knobs (``smner synth --help``): their defaults, the ``--realistic``
preset, and the one-line refusals of values out of range, given before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smner.errors import SmnerError

#: Share of posts with no entity; the rest have one or two (``two_entity`` of all posts).
NO_ENTITY_SHARE = 0.1
TWO_ENTITY_DEFAULT = 0.3

MIN_POSTS = 20
MIN_IMAGE_SIZE = 64

#: ``--realistic``: the shares of a corpus where text and image each tell part of the story.
REALISTIC: dict[str, Any] = {
    "text_cues": 0.5,
    "noise": 0.2,
    "unrelated": 0.1,
    "two_entity": 0.3,
    "cue_size": (0.3, 0.5),
    "distractors": 0.3,
}


@dataclass(frozen=True, slots=True)
class Knobs:
    """The corpus knobs beyond noise and ungroundable (see ``smner synth --help``). At their
    defaults no random number is drawn for them, so the corpus is the one earlier versions
    wrote, byte for byte, and ``meta.jsonl`` keeps its earlier keys."""

    text_cues: float = 0.0
    unrelated: float = 0.0
    two_entity: float = TWO_ENTITY_DEFAULT
    position_words: float = 0.0
    cue_size: tuple[float, float] | None = None
    distractors: float = 0.0

    @property
    def extended(self) -> bool:
        """Whether any knob is away from its default (then meta.jsonl records them all)."""
        return self != Knobs()


def _check_share(value: float, what: str, top: float = 1.0) -> None:
    """Refuse a share outside 0..``top`` (NaN included) in one line naming the knob."""
    if not 0.0 <= value <= top:
        raise SmnerError(f"{what}: 0 to {top:g}, got {value}")


def parse_cue_size(text: str) -> tuple[float, float]:
    """``"LO-HI"`` (or one share, ``"X"``) as the range of a cue's side, in shares of the side
    of the image (of its half for two-cue images); refused in one line unless 0 < LO <= HI <= 1."""
    try:
        values = [float(part) for part in text.split("-")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not 0.0 < values[0] <= values[1] <= 1.0:
        raise SmnerError(
            "the cue size is LO-HI, the side of a cue as a share of the image side with "
            f"0 < LO <= HI <= 1 (e.g. 0.3-0.5), got {text!r}"
        )
    return values[0], values[1]


def validate_knobs(knobs: Knobs, noise: float) -> None:
    """Refuse any knob out of range, in one line, before anything is written."""
    _check_share(knobs.text_cues, "text cues is the share of posts whose words tell the types")
    _check_share(knobs.unrelated, "unrelated is the share of posts with an image of no entity")
    if noise + knobs.unrelated > 1.0:
        raise SmnerError(
            "noise and unrelated are shares of different posts: together at most 1, "
            f"got {noise} + {knobs.unrelated}"
        )
    _check_share(
        knobs.two_entity,
        f"two-entity is the share of posts with two entities ({NO_ENTITY_SHARE:g} have none)",
        top=round(1 - NO_ENTITY_SHARE, 10),
    )
    _check_share(
        knobs.position_words,
        "position words is the share of two-entity posts whose text says where each entity is",
    )
    _check_share(knobs.distractors, "distractors is the share of posts with an extra object")
    if knobs.cue_size is not None:
        parse_cue_size("-".join(str(v) for v in knobs.cue_size))


def validate_settings(
    posts: int, seed: int, noise: float, image_size: int, ungroundable: float
) -> None:
    if not 0.0 <= ungroundable <= 1.0:
        raise SmnerError(
            f"ungroundable is the share of entities left out of their image: 0 to 1, "
            f"got {ungroundable}"
        )
    if posts < MIN_POSTS:
        raise SmnerError(f"a synthetic corpus needs at least {MIN_POSTS} posts, got {posts}")
    if not 0.0 <= noise <= 1.0:
        raise SmnerError(f"noise is the share of posts with a wrong image: 0 to 1, got {noise}")
    if seed < 0:
        raise SmnerError(f"the seed must be 0 or more, got {seed}")
    if image_size < MIN_IMAGE_SIZE:
        raise SmnerError(f"images need at least {MIN_IMAGE_SIZE} pixels a side, got {image_size}")
