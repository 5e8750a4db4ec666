"""Attention heatmaps: a span's attention over the image grid, drawn over the image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def render_heatmap(
    image: Image.Image, attention: Sequence[Sequence[float]], opacity: float = 0.55
) -> Image.Image:
    """Blend a red-yellow map of ``attention`` (``[h][w]``, any scale) over ``image``.

    The grid is normalised to its own maximum so the most attended cell is always visible,
    then smoothly upsampled to the image size.
    """
    grid = np.asarray(attention, dtype=np.float32)
    peak = float(grid.max()) if grid.size else 0.0
    normalised = grid / peak if peak > 0 else grid
    small = Image.fromarray((normalised * 255).astype(np.uint8), mode="L")
    heat = np.asarray(small.resize(image.size, Image.Resampling.BICUBIC), dtype=np.float32) / 255
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1) * 255
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    alpha = (opacity * heat)[..., None]
    blended = base * (1 - alpha) + colour * alpha
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))
