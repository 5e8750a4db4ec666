"""Attention heatmaps: a span's attention over the image grid, drawn over the image."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

#: outline of a grounding model's box for the entity (cyan: apart from the red-yellow map)
BOX_COLOUR = (0, 230, 255)

if TYPE_CHECKING:
    from smner.data.predictions import Mention
    from smner.encoders.preprocessing import ImagePreprocessing


def render_heatmap(
    image: Image.Image,
    attention: Sequence[Sequence[float]],
    crop_box: tuple[float, float, float, float] | None = None,
    opacity: float = 0.55,
    entity_box: Sequence[float] | None = None,
) -> Image.Image:
    """Blend a red-yellow map of ``attention`` (``[h][w]``, any scale) over ``image``.

    The grid is normalised to its own maximum so the most attended cell is always visible,
    then smoothly upsampled over ``crop_box`` (the part of the image the model saw, see
    ``ImagePreprocessing.crop_box``; the whole image when None). Outside it the image is dimmed.
    ``entity_box`` (pixels, from a grounding model) is outlined in cyan on top.
    """
    rgb = image.convert("RGB")
    x0, y0, x1, y1 = (round(v) for v in (crop_box or (0, 0, *rgb.size)))
    grid = np.asarray(attention, dtype=np.float32)
    peak = float(grid.max()) if grid.size else 0.0
    normalised = grid / peak if peak > 0 else grid
    small = Image.fromarray((normalised * 255).astype(np.uint8), mode="L")
    heat = np.zeros((rgb.height, rgb.width), dtype=np.float32)
    heat[y0:y1, x0:x1] = (
        np.asarray(small.resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC), np.float32) / 255
    )
    base = np.asarray(rgb, dtype=np.float32)
    seen = np.zeros_like(heat, dtype=bool)
    seen[y0:y1, x0:x1] = True
    base = np.where(seen[..., None], base, base * 0.45)
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1) * 255
    alpha = (opacity * heat)[..., None]
    blended = base * (1 - alpha) + colour * alpha
    result = Image.fromarray(blended.clip(0, 255).astype(np.uint8))
    if entity_box is not None:
        width = max(2, round(min(rgb.size) / 100))
        ImageDraw.Draw(result).rectangle(
            [round(v) for v in entity_box], outline=BOX_COLOUR, width=width
        )
    return result


def save_entity_heatmaps(
    folder: Path,
    stem: str,
    picture: Image.Image,
    entities: Sequence[Mention],
    preprocessing: ImagePreprocessing | None,
) -> dict[int, Path]:
    """One PNG per entity that has attention: ``<stem>-<n>-<type>-<text>.png`` in ``folder``,
    by the entity's index ``n``.

    ``picture`` must be the image as the model read it (upright, see ``load_image_file``) so
    the grid lands where the model looked; ``preprocessing`` gives the crop it saw. An
    entity's box (grounding models) is outlined over its heatmap.
    """
    folder.mkdir(parents=True, exist_ok=True)
    safe_stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64]
    box = preprocessing.crop_box(*picture.size) if preprocessing is not None else None
    written = {}
    for n, mention in enumerate(entities):
        if mention.attention is None:
            continue
        safe_text = re.sub(r"[^A-Za-z0-9_-]", "_", mention.text)[:40]
        target = folder / f"{safe_stem}-{n}-{mention.type}-{safe_text}.png"
        render_heatmap(picture, mention.attention, box, entity_box=mention.box).save(target)
        written[n] = target
    return written
