"""Colours and polygon helpers shared by the synthetic corpus's painters."""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Callable, Sequence

from PIL import ImageDraw

RGB = tuple[int, int, int]
#: Draws one object into a ``width`` x ``height`` RGBA layer with the given random source.
Painter = Callable[[ImageDraw.ImageDraw, float, float, random.Random], None]


def random_colour(
    rng: random.Random,
    saturation: tuple[float, float] = (0.4, 0.9),
    value: tuple[float, float] = (0.4, 0.95),
) -> RGB:
    """A colour from HSV ranges, so that saturation and brightness stay controllable."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return round(r * 255), round(g * 255), round(b * 255)


def rgb(values: Sequence[float]) -> RGB:
    """Round and clamp three channel values into a PIL colour."""
    r, g, b = (max(0, min(255, round(v))) for v in values)
    return r, g, b


def shade(colour: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    if factor <= 1:
        return rgb([c * factor for c in colour])
    return rgb([c + (255 - c) * (factor - 1) for c in colour])


def jitter(colour: RGB, rng: random.Random, amount: int = 12) -> RGB:
    """A colour near ``colour``, so fixed palettes still vary from post to post."""
    return rgb([c + rng.randint(-amount, amount) for c in colour])


def star(
    cx: float, cy: float, outer: float, inner: float, points: int
) -> list[tuple[float, float]]:
    """Vertices of a star polygon (also used for bold logos)."""
    vertices = []
    for i in range(points * 2):
        radius = outer if i % 2 == 0 else inner
        angle = math.pi * i / points - math.pi / 2
        vertices.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return vertices


def regular(
    cx: float, cy: float, radius: float, sides: int, turn: float = 0.0
) -> list[tuple[float, float]]:
    """Vertices of a regular polygon."""
    return [
        (
            cx + radius * math.cos(2 * math.pi * i / sides + turn),
            cy + radius * math.sin(2 * math.pi * i / sides + turn),
        )
        for i in range(sides)
    ]


def vertical_gradient(
    draw: ImageDraw.ImageDraw, box: Sequence[float], top: RGB, bottom: RGB
) -> None:
    """Fill ``box`` with a top-to-bottom gradient, one line per row (cheap at these sizes)."""
    x0, y0, x1, y1 = box
    rows = max(1, int(y1 - y0))
    for i in range(rows):
        t = i / rows
        colour = rgb([a + (b - a) * t for a, b in zip(top, bottom, strict=True)])
        draw.line((x0, y0 + i, x1, y0 + i), fill=colour)
