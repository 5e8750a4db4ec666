"""Distractors: objects that show no entity type (a ball, a tree, a cloud), so that a
cue is more than 'an object is drawn'."""

from __future__ import annotations

import math
import random

from PIL import ImageDraw

from smner.synth.palette import Painter, jitter, random_colour, regular, shade


def _ball(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A ball: a football with dark patches, a striped beach ball or a seamed tennis ball."""
    r = min(w, h) / 2 * rng.uniform(0.85, 0.98)
    cx, cy = w / 2, h / 2
    disc = (cx - r, cy - r, cx + r, cy + r)
    kind = rng.randrange(3)
    if kind == 0:  # football
        draw.ellipse(disc, fill=(245, 245, 245), outline=(40, 40, 40), width=max(1, round(r / 20)))
        draw.polygon(regular(cx, cy, r * 0.3, 5, -math.pi / 2), fill=(30, 30, 30))
        for i in range(5):
            angle = 2 * math.pi * i / 5 - math.pi / 2
            px, py = cx + r * 0.78 * math.cos(angle), cy + r * 0.78 * math.sin(angle)
            draw.polygon(regular(px, py, r * 0.17, 5, angle), fill=(30, 30, 30))
    elif kind == 1:  # beach ball
        colours = [random_colour(rng, (0.7, 1.0), (0.8, 1.0)) for _ in range(3)]
        for i in range(6):
            draw.pieslice(disc, i * 60, (i + 1) * 60, fill=colours[i % 3] if i % 2 else "white")
        draw.ellipse((cx - r * 0.15, cy - r * 0.15, cx + r * 0.15, cy + r * 0.15), "white")
    else:  # tennis ball
        draw.ellipse(disc, fill=jitter((200, 225, 60), rng))
        seam = max(2, round(r * 0.08))
        draw.arc((cx - r * 1.6, cy - r, cx - r * 0.2, cy + r), -60, 60, fill="white", width=seam)
        draw.arc((cx + r * 0.2, cy - r, cx + r * 1.6, cy + r), 120, 240, fill="white", width=seam)


def _tree(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A lone tree on nothing: a trunk under a round crown or a stack of conifer tiers."""
    cx = w / 2
    trunk = jitter((100, 70, 45), rng)
    trunk_w = w * rng.uniform(0.1, 0.16)
    draw.rectangle((cx - trunk_w / 2, h * 0.6, cx + trunk_w / 2, h), fill=trunk)
    green = jitter(rng.choice(((50, 120, 50), (80, 150, 60), (40, 100, 70))), rng, 15)
    if rng.random() < 0.5:  # broadleaf: overlapping blobs
        for _ in range(rng.randint(4, 6)):
            bx, by = cx + w * rng.uniform(-0.25, 0.25), h * rng.uniform(0.2, 0.45)
            br = min(w, h) * rng.uniform(0.18, 0.26)
            draw.ellipse((bx - br, by - br, bx + br, by + br), fill=jitter(green, rng, 10))
    else:  # conifer: tiers of triangles
        tiers = rng.randint(3, 4)
        for i in range(tiers):
            top = h * (0.02 + i * 0.16)
            half = w * (0.22 + i * 0.08)
            base = top + h * 0.3
            draw.polygon([(cx - half, base), (cx, top), (cx + half, base)], fill=green)


def _cloud(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A cloud: white or grey puffs over a flat base."""
    colour = rng.choice(((250, 250, 252), (235, 238, 245), (200, 205, 215)))
    base = h * 0.8
    draw.rounded_rectangle((w * 0.08, h * 0.5, w * 0.92, base), radius=h * 0.15, fill=colour)
    for _ in range(rng.randint(3, 5)):
        px = w * rng.uniform(0.2, 0.8)
        pr = min(w * 0.25, h * 0.4) * rng.uniform(0.7, 1.0)
        py = base - pr * rng.uniform(0.8, 1.2)
        draw.ellipse((px - pr, py - pr, px + pr, py + pr), fill=jitter(colour, rng, 5))
    draw.line((w * 0.12, base, w * 0.88, base), fill=shade(colour, 0.85), width=2)


#: Objects drawn as distractors (``--distractors``, and the scenes of unrelated images): their
#: painter and their width and height as shares of the side of their box.
DISTRACTORS: dict[str, tuple[Painter, float, float]] = {
    "ball": (_ball, 1.0, 1.0),
    "tree": (_tree, 0.7, 1.0),
    "cloud": (_cloud, 1.0, 0.6),
}
