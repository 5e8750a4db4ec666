"""A post's photo: a varied background, clutter, the type cues and distractors, occluders.

The cues are drawn anew for every post (painters in :mod:`smner.synth.cue_painters`), with
random position, scale, colours, small rotations and clutter, so that a model must recognise
*what* is drawn (a person, a landscape or map, a storefront or logo, a product) from the
features of a pretrained backbone rather than memorise pixels. Cue layers are drawn at twice
their size and reduced, a cheap anti-aliasing that keeps the drawings closer to the photos the
backbone was trained on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from smner.synth.cue_painters import PAINTERS
from smner.synth.distractor_painters import DISTRACTORS
from smner.synth.palette import Painter, random_colour

Box = tuple[int, int, int, int]

_SUPERSAMPLE = 2
_MAX_ROTATION = 10.0


# --- background and clutter -------------------------------------------------------------------


def draw_background(size: int, rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    """A gradient, radial or striped background with sensor-like noise: no two are alike."""
    c0 = np.array(random_colour(rng, (0.05, 0.6), (0.3, 0.95)), dtype=np.float32)
    c1 = np.array(random_colour(rng, (0.05, 0.6), (0.3, 0.95)), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    angle = rng.uniform(0, 2 * math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    kind = rng.random()
    if kind < 0.5:
        t = (along - along.min()) / max(1e-6, float(along.max() - along.min()))
    elif kind < 0.8:
        cx, cy = rng.random(), rng.random()
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = t / max(1e-6, float(t.max()))
    else:
        t = 0.5 + 0.5 * np.sin(along * rng.uniform(6, 20) * math.pi)
    pixels = c0 * (1 - t[..., None]) + c1 * t[..., None]
    pixels += nprng.normal(0.0, rng.uniform(3, 12), size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def draw_clutter(image: Image.Image, rng: random.Random, count: int, scale: float) -> None:
    """Small random shapes that belong to no type, so a cue is more than 'anything drawn'."""
    draw = ImageDraw.Draw(image)
    size = image.width
    for _ in range(count):
        extent = size * rng.uniform(0.3, 1.0) * scale
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        colour = random_colour(rng, (0.1, 0.9), (0.2, 1.0))
        kind = rng.randrange(4)
        if kind == 0:
            draw.ellipse((x, y, x + extent, y + extent * rng.uniform(0.5, 1.5)), fill=colour)
        elif kind == 1:
            draw.rectangle((x, y, x + extent, y + extent * rng.uniform(0.3, 1.5)), fill=colour)
        elif kind == 2:
            end = (x + rng.uniform(-1, 1) * extent * 2, y + rng.uniform(-1, 1) * extent * 2)
            draw.line((x, y, *end), fill=colour, width=max(1, round(extent / 8)))
        else:
            points = [
                (x + rng.uniform(-1, 1) * extent, y + rng.uniform(-1, 1) * extent)
                for _ in range(rng.randint(3, 5))
            ]
            draw.polygon(points, fill=colour)


def _layer(painter: Painter, width: int, height: int, rng: random.Random) -> Image.Image:
    """An RGBA ``width`` x ``height`` layer that ``painter`` drew at the supersampled size."""
    big = (width * _SUPERSAMPLE, height * _SUPERSAMPLE)
    layer = Image.new("RGBA", big, (0, 0, 0, 0))
    painter(ImageDraw.Draw(layer), float(big[0]), float(big[1]), rng)
    return layer.reduce(_SUPERSAMPLE)


def draw_cue(kind: str, width: int, height: int, rng: random.Random) -> Image.Image:
    """An RGBA drawing of a type cue that fills a ``width`` x ``height`` box."""
    painters = PAINTERS[kind]
    painter = rng.choices([p for p, _ in painters], weights=[w for _, w in painters])[0]
    return _layer(painter, width, height, rng)


def draw_distractor(kind: str, width: int, height: int, rng: random.Random) -> Image.Image:
    """An RGBA drawing of a distractor (see :data:`DISTRACTORS`) in a ``width`` x ``height`` box."""
    return _layer(DISTRACTORS[kind][0], width, height, rng)


def render_image(
    size: int,
    cues: Sequence[tuple[str, Box]],
    rng: random.Random,
    nprng: np.random.Generator,
    distractors: Sequence[tuple[str, Box]] = (),
) -> Image.Image:
    """The photo of a post: background, clutter, one cue per ``(type, box)``, then each
    distractor ``(kind, box)``, and a few occluders. Without distractors no random numbers are
    drawn for them, so such images are those earlier versions drew."""
    image = draw_background(size, rng, nprng)
    draw_clutter(image, rng, rng.randint(3, 7) if cues else rng.randint(6, 10), scale=0.14)
    for kind, (x0, y0, x1, y1) in cues:
        layer = draw_cue(kind, x1 - x0, y1 - y0, rng)
        angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION)
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
        image.paste(layer, (x0, y0), layer)
    for kind, (x0, y0, x1, y1) in distractors:
        layer = draw_distractor(kind, x1 - x0, y1 - y0, rng)
        image.paste(layer, (x0, y0), layer)
    draw_clutter(image, rng, rng.randint(0, 2), scale=0.06)
    return image
