"""The JPEG files of a post's images: each drawn with RNGs derived from the corpus seed, the
post's index and (where a post has several) the image's index, so that an image depends only on
its own post and fixed encoder settings make the bytes reproducible."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

from smner.synth.drawing import render_image
from smner.synth.layout import Cue, Distractor

JPEG_QUALITY = 90


def post_rngs(
    seed: int, index: int, image: int | None = None
) -> tuple[random.Random, np.random.Generator]:
    """Drawing RNGs of one post (of its ``image``-th image, where it has several), derived from
    the corpus seed and the post's index only."""
    sequence = np.random.SeedSequence([seed, index] if image is None else [seed, index, image])
    state = int.from_bytes(sequence.generate_state(4).tobytes(), "little")
    return random.Random(state), np.random.default_rng(sequence)


def encode_images(
    seed: int,
    index: int,
    size: int,
    image_ids: Sequence[str],
    cues: Sequence[Cue],
    objects: Sequence[Distractor],
) -> list[tuple[str, bytes]]:
    """``(image id, JPEG bytes)`` of each image of post ``index``: the cues and objects whose
    ``image`` is its index. A one-image post draws from the RNGs of earlier versions."""
    encoded = []
    for k, image_id in enumerate(image_ids):
        image = render_image(
            size,
            [(c.type, c.box) for c in cues if c.image == k],
            *post_rngs(seed, index, None if len(image_ids) == 1 else k),
            [(d.kind, d.box) for d in objects if d.image == k],
        )
        encoded.append((image_id, jpeg(image)))
    return encoded


def jpeg(image: Image.Image) -> bytes:
    """JPEG bytes with fixed encoder settings."""
    buffer = io.BytesIO()
    image.save(
        buffer,
        format="JPEG",
        quality=JPEG_QUALITY,
        subsampling=0,
        optimize=False,
        progressive=False,
    )
    return buffer.getvalue()
