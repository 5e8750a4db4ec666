"""Generation and writing of the synthetic corpus (see :mod:`smner.synth`).

Generation is planned first (texts, labels, which cues go where) with one seeded RNG, and the
images are drawn afterwards, each with an RNG derived from the seed and the post's index: the
plan does not depend on whether images are drawn, and each image depends only on its own post.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from smner.data.boxes import format_voc
from smner.data.conll import format_conll
from smner.data.spans import entities_to_bio
from smner.data.types import Entity, Example
from smner.errors import SmnerError
from smner.fileio import atomic_write_text, replace_directory
from smner.synth.drawing import Box, render_image
from smner.synth.text import NAMES, TYPE_HINTS, TYPES, compose_post, with_type_hints

SPLITS: tuple[str, ...] = ("train", "valid", "test")
_SPLIT_SHARES = (0.70, 0.15, 0.15)
#: (entities per post, share of posts)
_ENTITY_COUNT_SHARES = ((1, 0.6), (2, 0.3), (0, 0.1))

MIN_POSTS = 20
MIN_IMAGE_SIZE = 64
JPEG_QUALITY = 90

#: Longer side of the cue box of a one-cue image, as a share of the image side.
_SINGLE_SIDE = (0.45, 0.9)
#: Width of each cue box of a two-cue image, as a share of half the image side.
_PAIR_SIDE = (0.6, 0.96)


@dataclass(frozen=True, slots=True)
class Cue:
    """What was drawn where: a cue of ``type`` inside ``box`` = (x0, y0, x1, y1), ends exclusive,
    showing the post's ``entity``-th entity (None: another post's cue, on a mismatched image)."""

    type: str
    box: Box
    entity: int | None = None


@dataclass(frozen=True, slots=True)
class SynthPost:
    """One planned post: its text and labels, and the cues its image shows."""

    index: int
    split: str
    image_id: str
    tokens: tuple[str, ...]
    entities: tuple[Entity, ...]
    cues: tuple[Cue, ...]
    noisy: bool

    def example(self) -> Example:
        """The post as the data reader will return it."""
        tags = entities_to_bio(self.entities, len(self.tokens))
        return Example(
            tokens=list(self.tokens),
            tags=tags,
            image_id=self.image_id,
            post_id=self.image_id,
            entities=list(self.entities),
        )

    def voc(self, image_size: int) -> str:
        """The post's entity boxes as VOC XML: each entity's own cue, named by its text (a post
        with a mismatched image shows other posts' cues, so its entities have none, and an
        entity whose cue was left out has none either)."""
        objects = []
        for cue in self.cues:
            if cue.entity is not None:
                entity = self.entities[cue.entity]
                objects.append((" ".join(self.tokens[entity.start : entity.end]), cue.box))
        return format_voc(self.image_id, (image_size, image_size), objects)

    def meta(self) -> dict[str, Any]:
        """The line of ``meta.jsonl`` that documents the post."""
        return {
            "split": self.split,
            "image_id": self.image_id,
            "tokens": list(self.tokens),
            "entities": [[e.start, e.end, e.type] for e in self.entities],
            "cues": [{"type": c.type, "box": list(c.box), "entity": c.entity} for c in self.cues],
            "noisy": self.noisy,
        }


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_corpus` wrote."""

    output: Path
    posts: dict[str, int]
    entities: dict[str, int]
    noisy: int
    images: int
    #: entities of posts with their own image whose cue was left out
    ungroundable: int = 0

    def format(self) -> str:
        """A few lines for the command line."""
        splits = ", ".join(f"{name} {count}" for name, count in self.posts.items())
        types = ", ".join(f"{name} {count}" for name, count in self.entities.items())
        return (
            f"wrote a synthetic corpus to {self.output}\n"
            f"  posts: {splits}\n"
            f"  entities: {types}\n"
            f"  noisy images: {self.noisy}\n"
            + (f"  entities not in their image: {self.ungroundable}\n" if self.ungroundable else "")
            + f"  images: {self.images}"
        )


class _Dealer:
    """Deals items from reshuffled decks, so every item comes up equally often over time."""

    def __init__(self, items: Sequence[Any], rng: random.Random) -> None:
        self._items = list(items)
        self._rng = rng
        self._deck: list[Any] = []

    def deal(self, avoid: Any = None) -> Any:
        """The next item of the deck that is not ``avoid`` (it stays for the next deal)."""
        if not self._deck or self._deck == [avoid]:
            fresh = self._items.copy()
            self._rng.shuffle(fresh)
            self._deck.extend(fresh)
        position = next(i for i, item in enumerate(self._deck) if item != avoid)
        return self._deck.pop(position)


def split_sizes(posts: int) -> tuple[int, ...]:
    """Posts per split, 70/15/15, adding up to ``posts``."""
    train = round(posts * _SPLIT_SHARES[0])
    valid = round(posts * _SPLIT_SHARES[1])
    return train, valid, posts - train - valid


def _entity_counts(posts: int, rng: random.Random) -> list[int]:
    """Entities per post for one split: 60% one, 30% two, 10% none, in random order."""
    counts: list[int] = []
    for count, share in _ENTITY_COUNT_SHARES[:-1]:
        counts.extend([count] * round(posts * share))
    counts.extend([_ENTITY_COUNT_SHARES[-1][0]] * (posts - len(counts)))
    rng.shuffle(counts)
    return counts


def _layout(types: Sequence[str], size: int, rng: random.Random) -> tuple[Cue, ...]:
    """Boxes for the cues: one anywhere, or the first in the left half and the second right."""
    if not types:
        return ()
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


def _noisy_indices(sizes: Sequence[int], noise: float, rng: random.Random) -> set[int]:
    """The posts that get an unrelated image: the share ``noise`` of every split."""
    chosen: set[int] = set()
    start = 0
    for size in sizes:
        chosen.update(rng.sample(range(start, start + size), round(noise * size)))
        start += size
    return chosen


def _donor_types(
    own: tuple[str, ...], all_types: Sequence[tuple[str, ...]], rng: random.Random
) -> tuple[str, ...]:
    """The types of another random post whose set of types differs: wrong cues for a noisy post."""
    candidates = [t for t in all_types if t and collections.Counter(t) != collections.Counter(own)]
    return rng.choice(candidates)


def build_posts(
    posts: int,
    seed: int = 0,
    noise: float = 0.0,
    image_size: int = 224,
    ungroundable: float = 0.0,
) -> list[SynthPost]:
    """Plan the corpus: texts, labels and cue boxes of every post, in split order.

    Types are dealt from reshuffled decks (single types, and ordered pairs of different types)
    and names from one deck per type, so every name is used as every type about equally often.
    With ``ungroundable`` > 0, that share of the entities of posts with their own image is not
    drawn; the text names its type instead ("the town of Velmora"). At 0 no extra random numbers
    are drawn, so such a corpus is the one earlier versions wrote.
    """
    rng = random.Random(seed)
    sizes = split_sizes(posts)
    splits = [name for name, size in zip(SPLITS, sizes, strict=True) for _ in range(size)]
    counts = [count for size in sizes for count in _entity_counts(size, rng)]
    singles = _Dealer([(t,) for t in TYPES], rng)
    pairs = _Dealer(list(itertools.permutations(TYPES, 2)), rng)
    all_types: list[tuple[str, ...]] = [
        () if count == 0 else singles.deal() if count == 1 else pairs.deal() for count in counts
    ]
    names = {kind: _Dealer(NAMES, rng) for kind in TYPES}
    noisy = _noisy_indices(sizes, noise, rng)
    planned: list[SynthPost] = []
    for index, types in enumerate(all_types):
        chosen: list[str] = []
        for kind in types:
            chosen.append(names[kind].deal(avoid=chosen[0] if chosen else None))
        hints: list[str | None] = [None] * len(types)
        if ungroundable > 0 and index not in noisy:
            hints = [
                rng.choice(TYPE_HINTS[kind]) if rng.random() < ungroundable else None
                for kind in types
            ]
        reserve = sum(len(hint.split()) for hint in hints if hint)
        tokens, spans = compose_post(rng, chosen, reserve)
        if reserve:
            tokens, spans = with_type_hints(tokens, spans, hints)
        entities = tuple(
            Entity(start, end, kind) for (start, end), kind in zip(spans, types, strict=True)
        )
        if index in noisy:
            cues = _layout(_donor_types(types, all_types, rng), image_size, rng)
        else:
            laid_out = _layout(types, image_size, rng)
            cues = tuple(
                Cue(cue.type, cue.box, slot)
                for slot, cue in enumerate(laid_out)
                if hints[slot] is None
            )
        planned.append(
            SynthPost(
                index=index,
                split=splits[index],
                image_id=f"synth{seed}-{index:05d}",
                tokens=tuple(tokens),
                entities=entities,
                cues=cues,
                noisy=index in noisy,
            )
        )
    return planned


def _post_rngs(seed: int, index: int) -> tuple[random.Random, np.random.Generator]:
    """Drawing RNGs of one post, derived from the corpus seed and the post's index only."""
    sequence = np.random.SeedSequence([seed, index])
    state = int.from_bytes(sequence.generate_state(4).tobytes(), "little")
    return random.Random(state), np.random.default_rng(sequence)


def encode_image(post: SynthPost, seed: int, image_size: int) -> bytes:
    """The JPEG bytes of a post's image; fixed encoder settings make them reproducible."""
    rng, nprng = _post_rngs(seed, post.index)
    image = render_image(image_size, [(c.type, c.box) for c in post.cues], rng, nprng)
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


def _write_images(
    output: Path, planned: Sequence[SynthPost], seed: int, image_size: int, progress: bool
) -> None:
    """Draw every image into a staging folder, then swap it in for ``output/images``."""
    staging = output / ".images.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for post in tqdm(planned, desc="drawing images", unit="img", disable=not progress):
        (staging / f"{post.image_id}.jpg").write_bytes(encode_image(post, seed, image_size))
    replace_directory(staging, output / "images")


def _write_boxes(output: Path, planned: Sequence[SynthPost], image_size: int) -> None:
    """One VOC XML file per post in ``output/boxes`` (swapped in whole, like the images)."""
    staging = output / ".boxes.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for post in planned:
        (staging / f"{post.image_id}.xml").write_text(post.voc(image_size), encoding="utf-8")
    replace_directory(staging, output / "boxes")


def _validate(posts: int, seed: int, noise: float, image_size: int, ungroundable: float) -> None:
    if not 0.0 <= ungroundable <= 1.0:
        raise SmnerError(
            f"ungroundable is the share of entities left out of their image: 0 to 1, "
            f"got {ungroundable}"
        )
    if posts < MIN_POSTS:
        raise SmnerError(f"a synthetic corpus needs at least {MIN_POSTS} posts, got {posts}")
    if not 0.0 <= noise <= 1.0:
        raise SmnerError(f"noise is the share of posts with a wrong image: 0 to 1, got {noise}")
    if seed < 0:
        raise SmnerError(f"the seed must be 0 or more, got {seed}")
    if image_size < MIN_IMAGE_SIZE:
        raise SmnerError(f"images need at least {MIN_IMAGE_SIZE} pixels a side, got {image_size}")


def generate_corpus(
    output: Path,
    posts: int = 1200,
    seed: int = 0,
    noise: float = 0.0,
    image_size: int = 224,
    progress: bool = False,
    draw_images: bool = True,
    ungroundable: float = 0.0,
) -> SynthSummary:
    """Write a synthetic corpus: ``train/valid/test.txt``, ``images/``, ``boxes/`` (each
    entity's cue box, VOC XML) and ``meta.jsonl``.

    The same arguments write byte-identical files. ``draw_images=False`` writes only the text
    files and ``meta.jsonl`` (identical to those written with images), for fast checks of the
    text. Images are written before the data files that name them.
    """
    _validate(posts, seed, noise, image_size, ungroundable)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    planned = build_posts(posts, seed, noise, image_size, ungroundable)
    if draw_images:
        _write_images(output, planned, seed, image_size, progress)
        _write_boxes(output, planned, image_size)
    for split in SPLITS:
        examples = [post.example() for post in planned if post.split == split]
        atomic_write_text(output / f"{split}.txt", format_conll(examples))
    meta = "".join(json.dumps(post.meta(), ensure_ascii=False) + "\n" for post in planned)
    atomic_write_text(output / "meta.jsonl", meta)
    entities = collections.Counter(e.type for post in planned for e in post.entities)
    return SynthSummary(
        output=output,
        posts={split: sum(post.split == split for post in planned) for split in SPLITS},
        entities={kind: entities[kind] for kind in TYPES},
        noisy=sum(post.noisy for post in planned),
        images=len(planned) if draw_images else 0,
        ungroundable=sum(
            len(post.entities) - sum(cue.entity is not None for cue in post.cues)
            for post in planned
            if not post.noisy
        ),
    )
