"""Posts of several images (``smner synth --images-per-post K``): which image shows each cue,
where in it, and what the images without a cue show.

Each cue is drawn in exactly one of the post's images; the other images show scenery of no
entity type (distractors) or an empty background. A post's two cues go into two different
images in the order the text mentions them, so that the first-mentioned entity's cue is in the
lower-indexed image: the text links each cue to its entity, as the left and right halves do in
a one-image post. Everything here draws from a stream of the post's own (:func:`post_rng`), so
the main planning stream, and with it every text and label, is that of the one-image corpus of
the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from smner.data.boxes import format_voc
from smner.errors import SmnerError
from smner.synth.layout import (
    SCENE_OBJECTS,
    Cue,
    Distractor,
    layout,
    place_distractors,
    placed_layout,
)

MAX_IMAGES_PER_POST = 8

#: Distractors in an image of a post that shows none of its cues (0: an empty background);
#: an unrelated post's images are scenes of ``SCENE_OBJECTS``, like its one image would be.
_SCENERY_OBJECTS = (0, SCENE_OBJECTS[1])


def check_images_per_post(count: Any) -> int:
    """``count``, or a one-line refusal of anything but a whole number of images
    1..``MAX_IMAGES_PER_POST``."""
    whole = isinstance(count, int) and not isinstance(count, bool)
    if not whole or not 1 <= count <= MAX_IMAGES_PER_POST:
        raise SmnerError(
            f"images per post is a whole number from 1 to {MAX_IMAGES_PER_POST}, got {count!r}"
        )
    return count


def parse_images_per_post(text: str) -> int:
    """``--images-per-post`` as a number (see :func:`check_images_per_post`)."""
    try:
        return check_images_per_post(int(text))
    except ValueError:
        return check_images_per_post(text)


def image_ids(base: str, count: int) -> tuple[str, ...]:
    """The ids of a post's images: its one-image id with ``_0`` .. ``_{count-1}``."""
    return tuple(f"{base}_{k}" for k in range(count))


def post_rng(seed: int, index: int) -> random.Random:
    """The stream of one post's multi-image plan, derived from the seed and its index only."""
    return random.Random(f"smner-synth:{seed}:images-per-post:{index}")


def spread_cues(
    cues: Sequence[Cue],
    regions: Sequence[str | None],
    count: int,
    size: int,
    rng: random.Random,
    cue_size: tuple[float, float] | None,
) -> tuple[Cue, ...]:
    """The cues, each alone in its own image, the images rising in the order of ``cues``.

    A cue is placed anywhere in its image, as a one-cue image places it (``cue_size`` of the
    image side, or the usual size), or inside the region its position words name (``regions``,
    None for none), so those words stay true of its image.
    """
    images = sorted(rng.sample(range(count), len(cues)))
    spread = []
    for cue, region, image in zip(cues, regions, images, strict=True):
        if region is None:
            (placed,) = layout((cue.type,), size, rng, cue_size)
        else:
            (placed,) = placed_layout((cue.type,), (region,), size, rng, cue_size)
        spread.append(Cue(cue.type, placed.box, cue.entity, image))
    return tuple(spread)


def extra_distractor(
    cues: Sequence[Cue], count: int, size: int, rng: random.Random
) -> tuple[Distractor, ...]:
    """The ``--distractors`` object of a post: in one of the images that show a cue (any
    image if none does), clear of that image's cues, so that it competes with a cue."""
    shown = sorted({cue.image for cue in cues}) or list(range(count))
    image = rng.choice(shown)
    boxes = [cue.box for cue in cues if cue.image == image]
    return tuple(replace(d, image=image) for d in place_distractors(rng, size, boxes, 1))


def scenery(
    cues: Sequence[Cue],
    distractors: Sequence[Distractor],
    count: int,
    size: int,
    rng: random.Random,
    unrelated: bool,
) -> tuple[Distractor, ...]:
    """The objects of the images that show no cue: a few distractors, or none (an empty
    background), clear of any distractor already in that image."""
    objects = SCENE_OBJECTS if unrelated else _SCENERY_OBJECTS
    shown = {cue.image for cue in cues}
    placed: list[Distractor] = []
    for image in range(count):
        if image in shown:
            continue
        taken = [d.box for d in distractors if d.image == image]
        drawn = place_distractors(rng, size, taken, rng.randint(*objects))
        placed.extend(replace(d, image=image) for d in drawn)
    return tuple(placed)


def box_files(
    ids: Sequence[str], size: int, named: Sequence[tuple[str, Cue]]
) -> list[tuple[str, str]]:
    """One VOC file per image, ``(image id, XML)``: the ``(entity text, cue)`` pairs drawn in
    that image, in its pixels."""
    return [
        (
            image_id,
            format_voc(image_id, (size, size), [(n, c.box) for n, c in named if c.image == k]),
        )
        for k, image_id in enumerate(ids)
    ]
