"""Generation and writing of the synthetic corpus (see :mod:`smner.synth`).

Generation is planned first (texts, labels, which cues go where) with one seeded RNG, and the
images are drawn afterwards, each with an RNG derived from the seed and the post's index: the
plan does not depend on whether images are drawn, and each image depends only on its own post.

The knobs that make the corpus test each module (text cues, unrelated images, position words,
cue size, distractors: see :class:`Knobs`) draw from streams of their own, derived from the seed
and the knob's name, and only when they are on: at their defaults the corpus is byte for byte
the one earlier versions wrote, and the knobs that change only images leave texts and labels as
they were. So do several images per post (:mod:`smner.synth.multi_image`), which spread the cues
of the one-image plan over the post's images.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from smner.data.conll import format_conll
from smner.fileio import atomic_write_text, replace_directory
from smner.synth.knobs import (
    TWO_ENTITY_DEFAULT,
    Knobs,
    validate_knobs,
    validate_settings,
)
from smner.synth.multi_image import (
    check_images_per_post,
)
from smner.synth.planner import Dealer, Planner, entity_counts, noisy_indices
from smner.synth.post import SynthPost, SynthSummary
from smner.synth.text import (
    TYPES,
)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
_SPLIT_SHARES = (0.70, 0.15, 0.15)

#: Where an image comes from: the post's own cues, another post's cues, or a scene with none.
IMAGE_KINDS: tuple[str, ...] = ("own", "mismatched", "unrelated")


def split_sizes(posts: int) -> tuple[int, ...]:
    """Posts per split, 70/15/15, adding up to ``posts``."""
    train = round(posts * _SPLIT_SHARES[0])
    valid = round(posts * _SPLIT_SHARES[1])
    return train, valid, posts - train - valid


def build_posts(
    posts: int,
    seed: int = 0,
    noise: float = 0.0,
    image_size: int = 224,
    ungroundable: float = 0.0,
    *,
    text_cues: float = 0.0,
    unrelated: float = 0.0,
    two_entity: float = TWO_ENTITY_DEFAULT,
    position_words: float = 0.0,
    cue_size: tuple[float, float] | None = None,
    distractors: float = 0.0,
    images_per_post: int = 1,
) -> list[SynthPost]:
    """Plan the corpus: texts, labels, cue boxes and distractors of every post, in split order.

    Types are dealt from reshuffled decks (single types, and ordered pairs of different types)
    and names from one deck per type, so every name is used as every type about equally often.
    With ``ungroundable`` > 0, that share of the entities of posts with their own image is not
    drawn; the text names its type instead ("the town of Velmora"). The other knobs are those
    of ``smner synth`` (see :class:`Knobs`). At their defaults no extra random numbers are
    drawn, so such a corpus is the one earlier versions wrote. With ``images_per_post`` > 1
    each post has that many images (see :mod:`smner.synth.multi_image`), and the same texts.
    """
    check_images_per_post(images_per_post)
    knobs = Knobs(text_cues, unrelated, two_entity, position_words, cue_size, distractors)
    rng = random.Random(seed)
    sizes = split_sizes(posts)
    splits = [name for name, size in zip(SPLITS, sizes, strict=True) for _ in range(size)]
    counts = [count for size in sizes for count in entity_counts(size, rng, two_entity)]
    singles = Dealer([(t,) for t in TYPES], rng)
    pairs = Dealer(list(itertools.permutations(TYPES, 2)), rng)
    all_types: list[tuple[str, ...]] = [
        () if count == 0 else singles.deal() if count == 1 else pairs.deal() for count in counts
    ]
    planner = Planner(
        rng,
        seed,
        sizes,
        all_types,
        noisy_indices(sizes, noise, rng),
        image_size,
        ungroundable,
        knobs,
        images_per_post,
    )
    return [planner.plan(index, split) for index, split in enumerate(splits)]


def _write_images(
    output: Path, planned: Sequence[SynthPost], seed: int, image_size: int, progress: bool
) -> None:
    """Draw every image into a staging folder, then swap it in for ``output/images``."""
    staging = output / ".images.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for post in tqdm(planned, desc="drawing images", unit="post", disable=not progress):
        for image_id, data in post.image_files(seed, image_size):
            (staging / f"{image_id}.jpg").write_bytes(data)
    replace_directory(staging, output / "images")


def _write_boxes(output: Path, planned: Sequence[SynthPost], image_size: int) -> None:
    """One VOC XML file per image in ``output/boxes`` (swapped in whole, like the images)."""
    staging = output / ".boxes.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for post in planned:
        for image_id, xml in post.box_files(image_size):
            (staging / f"{image_id}.xml").write_text(xml, encoding="utf-8")
    replace_directory(staging, output / "boxes")


def generate_corpus(
    output: Path,
    posts: int = 1200,
    seed: int = 0,
    noise: float = 0.0,
    image_size: int = 224,
    progress: bool = False,
    draw_images: bool = True,
    ungroundable: float = 0.0,
    *,
    text_cues: float = 0.0,
    unrelated: float = 0.0,
    two_entity: float = TWO_ENTITY_DEFAULT,
    position_words: float = 0.0,
    cue_size: tuple[float, float] | None = None,
    distractors: float = 0.0,
    images_per_post: int = 1,
) -> SynthSummary:
    """Write a synthetic corpus: ``train/valid/test.txt``, ``images/``, ``boxes/`` (each
    entity's cue box, VOC XML) and ``meta.jsonl``.

    The same arguments write byte-identical files; the knobs after ``ungroundable`` are those
    of ``smner synth`` (``generate_corpus(out, **REALISTIC)`` is ``--realistic``), and at their
    defaults the files are those earlier versions wrote. ``draw_images=False`` writes only the
    text files and ``meta.jsonl`` (identical to those written with images), for fast checks of
    the text. Images are written before the data files that name them. ``images_per_post``
    K > 1 gives each post K images ``<id>_0`` .. ``<id>_{K-1}`` (see
    :mod:`smner.synth.multi_image`) and one box file per image.
    """
    knobs = Knobs(text_cues, unrelated, two_entity, position_words, cue_size, distractors)
    validate_settings(posts, seed, noise, image_size, ungroundable)
    check_images_per_post(images_per_post)
    validate_knobs(knobs, noise)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    planned = build_posts(
        posts,
        seed,
        noise,
        image_size,
        ungroundable,
        text_cues=text_cues,
        unrelated=unrelated,
        two_entity=two_entity,
        position_words=position_words,
        cue_size=cue_size,
        distractors=distractors,
        images_per_post=images_per_post,
    )
    if draw_images:
        _write_images(output, planned, seed, image_size, progress)
        _write_boxes(output, planned, image_size)
    for split in SPLITS:
        examples = [post.example() for post in planned if post.split == split]
        atomic_write_text(output / f"{split}.txt", format_conll(examples))
    meta = "".join(json.dumps(post.meta(), ensure_ascii=False) + "\n" for post in planned)
    atomic_write_text(output / "meta.jsonl", meta)
    return _summary(output, planned, draw_images, images_per_post)


def _summary(
    output: Path, planned: Sequence[SynthPost], draw_images: bool, images_per_post: int = 1
) -> SynthSummary:
    """What was written, counted from the planned posts."""
    entities = collections.Counter(e.type for post in planned for e in post.entities)
    return SynthSummary(
        output=output,
        posts={split: sum(post.split == split for post in planned) for split in SPLITS},
        entities={kind: entities[kind] for kind in TYPES},
        noisy=sum(post.noisy for post in planned),
        images=len(planned) * images_per_post if draw_images else 0,
        ungroundable=sum(
            len(post.entities) - sum(cue.entity is not None for cue in post.cues)
            for post in planned
            if post.image == "own"
        ),
        unrelated=sum(post.image == "unrelated" for post in planned),
        text_cued=sum(post.text_cued for post in planned),
        positioned=sum(any(post.positions) for post in planned),
        distracted=sum(bool(post.distractors) and post.image != "unrelated" for post in planned),
        images_per_post=images_per_post,
    )
