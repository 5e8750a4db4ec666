"""Where the cues and distractors of a synthetic image go: the regions position words name,
cue boxes of the asked size, and distractors placed clear of every cue (see
:mod:`smner.synth.corpus`, which plans the posts)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smner.synth.distractor_painters import DISTRACTORS
from smner.synth.drawing import Box

#: Longer side of the cue box of a one-cue image, as a share of the image side.
_SINGLE_SIDE = (0.45, 0.9)
#: Width of each cue box of a two-cue image, as a share of half the image side.
_PAIR_SIDE = (0.6, 0.96)
#: Longer side of a cue box of a post with position words, as a share of the image side (the
#: pair range above, on the half), when no cue size is asked for.
_PLACED_SIDE = (0.3, 0.48)
#: Side of a distractor's box as a share of the image side; smaller ones are tried when no
#: space is free (down to _MIN_OBJECT_SIDE), so that distractors never overlap a cue.
_OBJECT_SIDE = (0.15, 0.3)
_MIN_OBJECT_SIDE = 0.05
#: Distractors in the scene of an unrelated image.
SCENE_OBJECTS = (1, 3)

#: The image regions that position words name, as (x0, y0, x1, y1) in halves of the side.
REGIONS: dict[str, tuple[int, int, int, int]] = {
    "left": (0, 0, 1, 2),
    "right": (1, 0, 2, 2),
    "top": (0, 0, 2, 1),
    "bottom": (0, 1, 2, 2),
    "top left": (0, 0, 1, 1),
    "top right": (1, 0, 2, 1),
    "bottom left": (0, 1, 1, 2),
    "bottom right": (1, 1, 2, 2),
}


def _disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two rectangles share no area (ends exclusive)."""
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


#: Ordered pairs of regions that share no area, so the words tell the two cues apart and
#: their boxes can never overlap ("X on the left , Y in the top right").
REGION_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (a, b) for a in REGIONS for b in REGIONS if a != b and _disjoint(REGIONS[a], REGIONS[b])
)


@dataclass(frozen=True, slots=True)
class Cue:
    """What was drawn where: a cue of ``type`` inside ``box`` = (x0, y0, x1, y1), ends exclusive,
    showing the post's ``entity``-th entity (None: another post's cue, on a mismatched image),
    in the post's ``image``-th image (always 0 unless posts have several)."""

    type: str
    box: Box
    entity: int | None = None
    image: int = 0


@dataclass(frozen=True, slots=True)
class Distractor:
    """An extra object drawn in ``box`` of the post's ``image``-th image, showing no entity type
    (see ``DISTRACTORS``)."""

    kind: str
    box: Box
    image: int = 0


def _default_layout(types: Sequence[str], size: int, rng: random.Random) -> tuple[Cue, ...]:
    """The cue boxes of earlier versions (their sizes, and their random draws)."""
    if len(types) == 1:
        longer = round(rng.uniform(*_SINGLE_SIDE) * size)
        shorter = round(longer * rng.uniform(0.8, 1.0))
        width, height = (longer, shorter) if rng.random() < 0.5 else (shorter, longer)
        x0, y0 = rng.randint(0, size - width), rng.randint(0, size - height)
        return (Cue(types[0], (x0, y0, x0 + width, y0 + height)),)
    half = size // 2
    cues = []
    for slot, kind in enumerate(types):
        width = round(rng.uniform(*_PAIR_SIDE) * half)
        height = min(size, round(width * rng.uniform(0.9, 1.3)))
        x0 = rng.randint(0, half - width) + slot * (size - half)
        y0 = rng.randint(0, size - height)
        cues.append(Cue(kind, (x0, y0, x0 + width, y0 + height)))
    return tuple(cues)


def _sides(rng: random.Random, share: tuple[float, float], reference: int) -> tuple[int, int]:
    """Width and height of a box whose longer side is ``share`` of ``reference`` pixels and
    whose shorter side is 80-100% of that, either way up."""
    longer = max(1, round(rng.uniform(*share) * reference))
    shorter = max(1, round(longer * rng.uniform(0.8, 1.0)))
    return (longer, shorter) if rng.random() < 0.5 else (shorter, longer)


def _box_in(rng: random.Random, region: Box, width: int, height: int) -> Box:
    """A ``width`` x ``height`` box at a random place inside ``region`` (shrunk to fit it,
    keeping its shape, so that the cue drawn in it keeps its proportions)."""
    x0, y0, x1, y1 = region
    scale = min(1.0, (x1 - x0) / width, (y1 - y0) / height)
    if scale < 1.0:
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    left, top = rng.randint(x0, x1 - width), rng.randint(y0, y1 - height)
    return (left, top, left + width, top + height)


def region_box(name: str, size: int) -> Box:
    """The pixels of a named region (see ``REGIONS``): the near half ends at ``size // 2`` and
    the far one starts at ``size - size // 2``, as the halves of two-cue images always did."""
    half = size // 2

    def edge(unit: int, is_end: bool) -> int:
        return 0 if unit == 0 else size if unit == 2 else half if is_end else size - half

    x0, y0, x1, y1 = REGIONS[name]
    return (edge(x0, False), edge(y0, False), edge(x1, True), edge(y1, True))


def layout(
    types: Sequence[str],
    size: int,
    rng: random.Random,
    cue_size: tuple[float, float] | None = None,
) -> tuple[Cue, ...]:
    """Boxes for the cues: one anywhere, or the first in the left half and the second right.
    With ``cue_size``, a box's longer side is that share of the image side (of the half, for
    two cues), so that pointing must find the cue; without, the sizes of earlier versions."""
    if not types:
        return ()
    if cue_size is None:
        return _default_layout(types, size, rng)
    if len(types) == 1:
        return (Cue(types[0], _box_in(rng, (0, 0, size, size), *_sides(rng, cue_size, size))),)
    return tuple(
        Cue(kind, _box_in(rng, region_box(side, size), *_sides(rng, cue_size, size // 2)))
        for kind, side in zip(types, ("left", "right"), strict=False)
    )


def placed_layout(
    types: Sequence[str],
    regions: Sequence[str],
    size: int,
    rng: random.Random,
    cue_size: tuple[float, float] | None,
) -> tuple[Cue, ...]:
    """Boxes for the cues of a post with position words: each anywhere inside the region its
    words name, its longer side ``cue_size`` of the image side (at most the region's)."""
    share = cue_size or _PLACED_SIDE
    return tuple(
        Cue(kind, _box_in(rng, region_box(region, size), *_sides(rng, share, size)))
        for kind, region in zip(types, regions, strict=True)
    )


def _free_box(
    rng: random.Random, size: int, taken: Sequence[Box], shape: tuple[float, float]
) -> Box | None:
    """A random box of ``shape`` (width and height per unit of side) that overlaps none of
    ``taken``: as large as drawn, or smaller where no such space is free; None if none is."""
    side = rng.uniform(*_OBJECT_SIDE) * size
    step = max(1, size // 40)
    while side >= _MIN_OBJECT_SIDE * size:
        width, height = max(1, round(side * shape[0])), max(1, round(side * shape[1]))
        xs = np.arange(0, size - width + 1, step)[:, None]
        ys = np.arange(0, size - height + 1, step)[None, :]
        free = np.ones((len(xs), ys.shape[1]), dtype=bool)
        for x0, y0, x1, y1 in taken:
            free &= (xs + width <= x0) | (x1 <= xs) | (ys + height <= y0) | (y1 <= ys)
        spots = np.argwhere(free)
        if len(spots):
            i, j = spots[rng.randrange(len(spots))]
            x, y = int(xs[i, 0]), int(ys[0, j])
            return (x, y, x + width, y + height)
        side *= 0.75
    return None


def place_distractors(
    rng: random.Random, size: int, taken: Sequence[Box], count: int
) -> tuple[Distractor, ...]:
    """Up to ``count`` distractors, each clear of ``taken`` (the cues) and of each other."""
    placed: list[Distractor] = []
    for _ in range(count):
        kind = rng.choice(tuple(DISTRACTORS))
        _, width, height = DISTRACTORS[kind]
        box = _free_box(rng, size, [*taken, *(d.box for d in placed)], (width, height))
        if box is not None:
            placed.append(Distractor(kind, box))
    return tuple(placed)
