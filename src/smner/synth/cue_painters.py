"""The four type cues as painters: a person, a landscape or map, a storefront or logo,
a product, each drawn anew from its random source."""

from __future__ import annotations

import math
import random

from PIL import ImageDraw

from smner.synth.palette import (
    RGB,
    Painter,
    jitter,
    random_colour,
    regular,
    shade,
    star,
    vertical_gradient,
)

_SKIN_TONES: tuple[RGB, ...] = (
    (255, 224, 196), (241, 194, 160), (224, 172, 135), (198, 134, 96),
    (161, 102, 70), (120, 75, 50), (92, 58, 40),
)  # fmt: skip
_HAIR_COLOURS: tuple[RGB, ...] = (
    (30, 24, 20), (70, 45, 30), (120, 80, 40), (200, 160, 90), (150, 60, 30), (180, 180, 180),
)  # fmt: skip


# --- PER: a person ----------------------------------------------------------------------------


def _person(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A head-and-shoulders portrait: face, hair, neck and clothes in varied colours."""
    skin = jitter(rng.choice(_SKIN_TONES), rng)
    hair = jitter(rng.choice(_HAIR_COLOURS), rng)
    shirt = random_colour(rng, (0.2, 0.9), (0.25, 0.9))
    ry = min(w, h) * rng.uniform(0.17, 0.22)
    rx = ry * rng.uniform(0.78, 0.9)
    cx = w * rng.uniform(0.45, 0.55)
    cy = h * rng.uniform(0.28, 0.36)
    style = rng.randrange(4)
    if style == 1:  # long hair, behind the head
        draw.ellipse((cx - rx * 1.3, cy - ry * 1.15, cx + rx * 1.3, cy + ry * 1.7), fill=hair)
    top = cy + ry * 1.15
    half = w * rng.uniform(0.36, 0.48)
    draw.ellipse((cx - half, top, cx + half, top + 2 * (h - top) + h * 0.4), fill=shirt)
    neck = shade(skin, 0.85)
    draw.rectangle((cx - rx * 0.38, cy + ry * 0.5, cx + rx * 0.38, top + ry * 0.2), fill=neck)
    draw.polygon([(cx - rx * 0.38, top), (cx + rx * 0.38, top), (cx, top + ry * 0.6)], fill=neck)
    for side in (-1, 1):  # ears
        ex = cx + side * rx
        draw.ellipse((ex - rx * 0.15, cy - ry * 0.15, ex + rx * 0.15, cy + ry * 0.25), fill=neck)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    if style in (0, 1):
        draw.chord((cx - rx * 1.06, cy - ry * 1.12, cx + rx * 1.06, cy + ry * 0.5), 180, 360, hair)
    elif style == 2:  # cap with a brim
        cap = random_colour(rng)
        draw.chord((cx - rx * 1.05, cy - ry * 1.18, cx + rx * 1.05, cy + ry * 0.45), 180, 360, cap)
        brim_side = rng.choice((-1, 1))
        brim_end = cx + brim_side * rx * 1.6
        brim = (min(cx, brim_end), cy - ry * 0.42, max(cx, brim_end), cy - ry * 0.3)
        draw.rectangle(brim, fill=shade(cap, 0.7))
    else:  # short hair
        draw.chord((cx - rx, cy - ry * 1.05, cx + rx, cy + ry * 0.1), 190, 350, hair)
    dark = (35, 25, 20)
    eye_y = cy + ry * 0.02
    for side in (-1, 1):
        ex = cx + side * rx * 0.4
        er = ry * 0.12
        draw.ellipse((ex - er * 1.3, eye_y - er, ex + er * 1.3, eye_y + er), fill=(250, 250, 250))
        draw.ellipse((ex - er * 0.6, eye_y - er * 0.6, ex + er * 0.6, eye_y + er * 0.6), fill=dark)
        brow_y = eye_y - ry * 0.25
        draw.line((ex - er * 1.4, brow_y, ex + er * 1.4, brow_y), fill=hair, width=max(1, int(er)))
    draw.line((cx, cy + ry * 0.1, cx - rx * 0.1, cy + ry * 0.35), fill=shade(skin, 0.7), width=2)
    draw.arc(
        (cx - rx * 0.4, cy + ry * 0.2, cx + rx * 0.4, cy + ry * 0.65),
        20,
        160,
        fill=(150, 40, 50),
        width=max(2, int(ry * 0.08)),
    )


# --- LOC: a landscape or a map ----------------------------------------------------------------


def _landscape(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """Sky, sun, snow-capped mountains and water or grass: an outdoor scene."""
    palettes = (
        ((70, 130, 220), (180, 215, 245)),  # day
        ((90, 60, 140), (250, 170, 90)),  # sunset
        ((30, 40, 90), (120, 110, 170)),  # dusk
        ((120, 170, 230), (240, 240, 250)),  # haze
    )
    top, bottom = rng.choice(palettes)
    horizon = h * rng.uniform(0.52, 0.7)
    vertical_gradient(draw, (0, 0, w, horizon + 1), jitter(top, rng), jitter(bottom, rng))
    sun_r = min(w, h) * rng.uniform(0.06, 0.11)
    sx, sy = w * rng.uniform(0.15, 0.85), horizon * rng.uniform(0.2, 0.55)
    sun = rng.choice(((255, 230, 90), (255, 180, 70), (255, 250, 230)))
    draw.ellipse((sx - sun_r, sy - sun_r, sx + sun_r, sy + sun_r), fill=sun)
    rock = rng.choice(((100, 100, 115), (80, 95, 120), (110, 90, 70), (70, 100, 70)))
    for _ in range(rng.randint(2, 4)):
        mx = w * rng.uniform(0.05, 0.95)
        half = w * rng.uniform(0.2, 0.4)
        peak = horizon - h * rng.uniform(0.18, 0.42)
        colour = jitter(rock, rng, 20)
        draw.polygon([(mx - half, horizon), (mx, peak), (mx + half, horizon)], fill=colour)
        cap = 0.28
        draw.polygon(
            [
                (mx - half * cap, peak + (horizon - peak) * cap),
                (mx, peak),
                (mx + half * cap, peak + (horizon - peak) * cap),
            ],
            fill=(245, 245, 250),
        )
    if rng.random() < 0.5:  # a lake or the sea
        water = jitter((40, 100, 170), rng, 20)
        draw.rectangle((0, horizon, w, h), fill=water)
        for _ in range(rng.randint(4, 8)):
            y = rng.uniform(horizon + 3, h)
            x = rng.uniform(0, w * 0.8)
            draw.line((x, y, x + w * rng.uniform(0.1, 0.3), y), fill=shade(water, 1.4), width=2)
    else:  # grass with a few trees
        grass = jitter(rng.choice(((80, 150, 60), (150, 160, 70), (60, 120, 60))), rng, 15)
        draw.rectangle((0, horizon, w, h), fill=grass)
        for _ in range(rng.randint(0, 4)):
            tx, ty = w * rng.uniform(0.05, 0.95), rng.uniform(horizon + h * 0.05, h * 0.95)
            th = h * rng.uniform(0.1, 0.2)
            draw.rectangle((tx - th * 0.06, ty - th * 0.2, tx + th * 0.06, ty), fill=(90, 60, 40))
            draw.polygon(
                [(tx - th * 0.3, ty - th * 0.15), (tx, ty - th), (tx + th * 0.3, ty - th * 0.15)],
                fill=(30, 90, 40),
            )


def _map(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A map: sea, an island outline, grid lines, a road and a location pin."""
    sea = jitter((170, 210, 235), rng, 15)
    draw.rectangle((0, 0, w, h), fill=sea)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    radius = min(w, h) * rng.uniform(0.28, 0.4)
    sides = rng.randint(10, 16)
    land = [
        (
            cx + radius * rng.uniform(0.65, 1.15) * math.cos(2 * math.pi * i / sides),
            cy + radius * rng.uniform(0.65, 1.15) * math.sin(2 * math.pi * i / sides),
        )
        for i in range(sides)
    ]
    land_colour = jitter(rng.choice(((200, 220, 160), (230, 215, 170), (170, 205, 140))), rng)
    draw.polygon(land, fill=land_colour, outline=shade(land_colour, 0.6))
    draw.line([*land, land[0]], fill=shade(land_colour, 0.55), width=3)
    step = min(w, h) / rng.randint(4, 7)
    grid = (120, 140, 160)
    for i in range(1, 8):
        draw.line((i * step, 0, i * step, h), fill=grid, width=1)
        draw.line((0, i * step, w, i * step), fill=grid, width=1)
    road = [land[rng.randrange(sides)], (cx, cy), land[rng.randrange(sides)]]
    draw.line(road, fill=(230, 120, 60), width=max(2, round(min(w, h) * 0.02)))
    pin_r = min(w, h) * rng.uniform(0.06, 0.09)
    px, py = cx + rng.uniform(-0.3, 0.3) * radius, cy + rng.uniform(-0.4, 0.1) * radius
    pin = rng.choice(((220, 40, 40), (230, 70, 30), (40, 80, 200)))
    draw.polygon(
        [
            (px - pin_r * 0.85, py + pin_r * 0.4),
            (px, py + pin_r * 2.4),
            (px + pin_r * 0.85, py + pin_r * 0.4),
        ],
        fill=pin,
    )
    draw.ellipse((px - pin_r, py - pin_r, px + pin_r, py + pin_r), fill=pin)
    draw.ellipse((px - pin_r * 0.4, py - pin_r * 0.4, px + pin_r * 0.4, py + pin_r * 0.4), "white")
    draw.rectangle((0, 0, w - 1, h - 1), outline=(90, 90, 90), width=3)


# --- ORG: a storefront or a logo --------------------------------------------------------------


def _logo(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, colour: RGB, rng: random.Random
) -> None:
    """A bold geometric brand mark."""
    kind = rng.randrange(5)
    if kind == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, round(r * 0.3)))
    elif kind == 1:
        draw.polygon(star(cx, cy, r, r * 0.45, 5), fill=colour)
    elif kind == 2:
        draw.polygon(regular(cx, cy, r, 3, -math.pi / 2), fill=colour)
    elif kind == 3:
        draw.polygon(regular(cx, cy, r, 6), fill=colour)
    else:
        draw.polygon(regular(cx, cy, r, 4), fill=colour)
        draw.ellipse((cx - r * 0.4, cy - r * 0.4, cx + r * 0.4, cy + r * 0.4), shade(colour, 0.5))


def _wordmark(
    draw: ImageDraw.ImageDraw,
    x: float,
    y: float,
    width: float,
    height: float,
    colour: RGB,
    rng: random.Random,
) -> None:
    """Blocks that read as lettering of a company name."""
    while width > height * 0.5:
        letter = height * rng.uniform(0.45, 0.8)
        draw.rectangle((x, y, x + letter, y + height), fill=colour)
        x += letter + height * 0.25
        width -= letter + height * 0.25


def _storefront(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A shop building: upper windows, a sign band with a logo, an awning, shop window, door."""
    facade = jitter(
        rng.choice(
            ((170, 70, 60), (225, 215, 190), (150, 150, 160), (90, 110, 140), (200, 170, 120))
        ),
        rng,
    )
    draw.rectangle((0, 0, w, h), fill=facade)
    draw.rectangle((0, 0, w, h * 0.05), fill=shade(facade, 0.6))
    sign_top, sign_bottom = h * rng.uniform(0.36, 0.44), h * rng.uniform(0.54, 0.6)
    glass = jitter((150, 190, 215), rng)
    cols = rng.randint(2, 4)
    pane_w = w / (cols * 1.6 + 0.6)
    for row_top, row_bottom in ((h * 0.1, sign_top - h * 0.05),):
        for c in range(cols):
            x = pane_w * 0.6 + c * pane_w * 1.6
            draw.rectangle(
                (x, row_top, x + pane_w, row_bottom), fill=glass, outline=(245, 245, 245), width=3
            )
    sign = random_colour(rng, (0.6, 1.0), (0.3, 0.8))
    draw.rectangle((0, sign_top, w, sign_bottom), fill=sign)
    band = sign_bottom - sign_top
    mark = rng.choice(((255, 255, 255), (255, 215, 0)))
    _logo(draw, band * 0.7, (sign_top + sign_bottom) / 2, band * 0.38, mark, rng)
    _wordmark(draw, band * 1.35, sign_top + band * 0.28, w - band * 1.7, band * 0.44, mark, rng)
    shop_top = sign_bottom
    if rng.random() < 0.65:  # striped awning
        awning_bottom = sign_bottom + h * rng.uniform(0.07, 0.11)
        stripes = rng.randint(5, 9)
        a, b = random_colour(rng), (250, 250, 250)
        for i in range(stripes):
            x0, x1 = i * w / stripes, (i + 1) * w / stripes
            draw.polygon(
                [
                    (x0, sign_bottom),
                    (x1, sign_bottom),
                    (x1 + w * 0.02, awning_bottom),
                    (x0 + w * 0.02, awning_bottom),
                ],
                fill=a if i % 2 else b,
            )
        shop_top = awning_bottom
    door_w = w * rng.uniform(0.16, 0.22)
    door_x = w * rng.uniform(0.15, 0.85 - door_w / w)
    draw.rectangle(
        (w * 0.05, shop_top + h * 0.04, w * 0.95, h * 0.96),
        fill=glass,
        outline=shade(facade, 0.5),
        width=4,
    )
    draw.line((w * 0.15, shop_top + h * 0.3, w * 0.35, shop_top + h * 0.08), fill="white", width=3)
    draw.rectangle((door_x, shop_top + h * 0.08, door_x + door_w, h), fill=shade(facade, 0.45))
    draw.ellipse(
        (
            door_x + door_w * 0.75,
            (shop_top + h) / 2,
            door_x + door_w * 0.85,
            (shop_top + h) / 2 + door_w * 0.1,
        ),
        fill=(230, 200, 90),
    )


def _logo_card(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A brand sign: a bold mark over lettering on a flat brand colour."""
    brand = random_colour(rng, (0.6, 1.0), (0.35, 0.85))
    draw.rounded_rectangle((0, 0, w, h), radius=min(w, h) * 0.08, fill=brand)
    mark = rng.choice(((255, 255, 255), (255, 215, 0), (20, 20, 20)))
    r = min(w, h) * rng.uniform(0.22, 0.3)
    _logo(draw, w / 2, h * 0.4, r, mark, rng)
    _wordmark(draw, w * 0.18, h * 0.76, w * 0.64, h * 0.1, mark, rng)


# --- MISC: a product --------------------------------------------------------------------------


def _bottle(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A bottle with a cap, a neck and a label."""
    body = random_colour(rng, (0.3, 0.9), (0.3, 0.8))
    bw = w * rng.uniform(0.3, 0.42)
    cx = w / 2
    body_top, bottom = h * rng.uniform(0.35, 0.42), h * 0.96
    neck_w = bw * 0.35
    draw.rounded_rectangle((cx - bw / 2, body_top, cx + bw / 2, bottom), radius=bw * 0.2, fill=body)
    draw.polygon(
        [
            (cx - bw / 2, body_top + bw * 0.2),
            (cx - neck_w / 2, h * 0.2),
            (cx + neck_w / 2, h * 0.2),
            (cx + bw / 2, body_top + bw * 0.2),
        ],
        fill=body,
    )
    draw.rectangle((cx - neck_w / 2, h * 0.1, cx + neck_w / 2, h * 0.22), fill=body)
    draw.rectangle(
        (cx - neck_w * 0.6, h * 0.04, cx + neck_w * 0.6, h * 0.11), fill=random_colour(rng)
    )
    label = random_colour(rng, (0.0, 0.4), (0.85, 1.0))
    label_top = body_top + (bottom - body_top) * 0.25
    draw.rectangle(
        (cx - bw / 2, label_top, cx + bw / 2, label_top + (bottom - body_top) * 0.4), fill=label
    )
    _logo(draw, cx, label_top + (bottom - body_top) * 0.2, bw * 0.2, body, rng)
    draw.line(
        (cx - bw * 0.3, body_top + bw * 0.3, cx - bw * 0.3, bottom - bw * 0.2),
        fill=shade(body, 1.5),
        width=max(2, round(bw * 0.06)),
    )


def _phone(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A smartphone: dark frame, lit screen with app icons, camera dot."""
    pw, ph = w * rng.uniform(0.42, 0.55), h * rng.uniform(0.82, 0.92)
    x0, y0 = (w - pw) / 2, (h - ph) / 2
    frame = rng.choice(((25, 25, 30), (200, 200, 205), (60, 60, 70), (180, 150, 120)))
    draw.rounded_rectangle((x0, y0, x0 + pw, y0 + ph), radius=pw * 0.14, fill=frame)
    m = pw * 0.07
    sx0, sy0, sx1, sy1 = x0 + m, y0 + m * 1.8, x0 + pw - m, y0 + ph - m * 1.8
    vertical_gradient(draw, (sx0, sy0, sx1, sy1), random_colour(rng), random_colour(rng))
    icon = (sx1 - sx0) / 5.2
    for row in range(rng.randint(2, 4)):
        for col in range(4):
            ix, iy = sx0 + icon * 0.4 + col * icon * 1.2, sy0 + icon * 0.5 + row * icon * 1.3
            draw.rounded_rectangle(
                (ix, iy, ix + icon, iy + icon),
                radius=icon * 0.25,
                fill=random_colour(rng, (0.5, 1.0), (0.7, 1.0)),
            )
    cr = m * 0.4
    draw.ellipse(
        (x0 + pw / 2 - cr, y0 + m * 0.9 - cr, x0 + pw / 2 + cr, y0 + m * 0.9 + cr),
        fill=(90, 90, 110),
    )


def _shoe(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A sneaker in profile: sole, upper, laces and a side stripe."""
    upper = random_colour(rng, (0.2, 1.0), (0.3, 0.95))
    sole = rng.choice(((245, 245, 245), (40, 40, 40), (200, 170, 130)))
    base = h * rng.uniform(0.68, 0.78)
    left, right = w * 0.05, w * 0.95
    draw.rounded_rectangle((left, base, right, base + h * 0.12), radius=h * 0.05, fill=sole)
    heel_top = h * rng.uniform(0.3, 0.4)
    points = [
        (left, base + 2),
        (left, heel_top + h * 0.05),
        (left + w * 0.12, heel_top),
        (left + w * 0.35, heel_top + h * 0.08),
        (left + w * 0.6, base - h * 0.22),
        (right - w * 0.05, base - h * 0.12),
        (right, base + 2),
    ]
    draw.polygon(points, fill=upper)
    dark = shade(upper, 0.55)
    for i in range(4):
        x = left + w * (0.36 + i * 0.06)
        y = heel_top + h * (0.1 + i * 0.04)
        draw.line((x, y, x + w * 0.05, y + h * 0.06), fill=(250, 250, 250), width=3)
    draw.arc(
        (left + w * 0.15, base - h * 0.35, left + w * 0.75, base + h * 0.02),
        20,
        160,
        fill=dark,
        width=max(3, round(h * 0.035)),
    )


def _can(draw: ImageDraw.ImageDraw, w: float, h: float, rng: random.Random) -> None:
    """A drinks can: metal rims, coloured body, a round logo."""
    cw = w * rng.uniform(0.4, 0.55)
    x0, x1 = (w - cw) / 2, (w + cw) / 2
    top, bottom = h * 0.12, h * 0.9
    rim = cw * 0.16
    metal = (190, 190, 200)
    colour = random_colour(rng, (0.5, 1.0), (0.4, 0.95))
    draw.ellipse((x0, bottom - rim, x1, bottom + rim), fill=shade(metal, 0.7))
    draw.rectangle((x0, top, x1, bottom), fill=colour)
    draw.rectangle((x0, top, x1, top + rim * 0.9), fill=metal)
    draw.rectangle((x0, bottom - rim * 0.6, x1, bottom), fill=metal)
    draw.ellipse((x0, top - rim, x1, top + rim), fill=shade(metal, 1.2), outline=(120, 120, 130))
    mark = rng.choice(((255, 255, 255), (255, 215, 0), (20, 20, 20)))
    _logo(draw, w / 2, (top + bottom) / 2, cw * 0.25, mark, rng)
    draw.line(
        (x0 + cw * 0.15, top + rim * 1.5, x0 + cw * 0.15, bottom - rim),
        fill=shade(colour, 1.5),
        width=max(2, round(cw * 0.05)),
    )


#: Each type's drawings and how often each is used.
PAINTERS: dict[str, tuple[tuple[Painter, float], ...]] = {
    "PER": ((_person, 1.0),),
    "LOC": ((_landscape, 0.65), (_map, 0.35)),
    "ORG": ((_storefront, 0.7), (_logo_card, 0.3)),
    "MISC": ((_bottle, 0.25), (_phone, 0.25), (_shoe, 0.25), (_can, 0.25)),
}
