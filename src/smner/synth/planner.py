"""Planning the generated corpus's posts: how many entities each has, which types, which
text, which cues its image shows and where, and which posts the knobs pick, all drawn from the
seeded streams in a fixed order (see :mod:`smner.synth.corpus`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from smner.data.types import Entity
from smner.synth.knobs import (
    NO_ENTITY_SHARE,
    TWO_ENTITY_DEFAULT,
    Knobs,
)
from smner.synth.layout import (
    REGION_PAIRS,
    SCENE_OBJECTS,
    Cue,
    Distractor,
    layout,
    place_distractors,
    placed_layout,
)
from smner.synth.multi_image import (
    extra_distractor,
    image_ids,
    post_rng,
    scenery,
    spread_cues,
)
from smner.synth.post import SynthPost
from smner.synth.text import (
    NAMES,
    POSITION_WORDS,
    TEXT_CUES,
    TYPE_HINTS,
    TYPES,
    compose_post,
    extra_words,
    fitting_templates,
    with_type_words,
)


class Dealer:
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


def entity_counts(
    posts: int, rng: random.Random, two_entity: float = TWO_ENTITY_DEFAULT
) -> list[int]:
    """Entities per post for one split: ``two_entity`` two, 10% none, the rest one, in random
    order. The one-entity share is rounded to 10 places so that 1 - 0.1 - 0.3 is the 0.6 of
    earlier versions, and gives the same counts."""
    shares = ((1, round(1 - NO_ENTITY_SHARE - two_entity, 10)), (2, two_entity))
    counts: list[int] = []
    for count, share in shares:
        counts.extend([count] * min(round(posts * share), posts - len(counts)))
    counts.extend([0] * (posts - len(counts)))
    rng.shuffle(counts)
    return counts


def noisy_indices(sizes: Sequence[int], noise: float, rng: random.Random) -> set[int]:
    """The posts that get an unrelated image: the share ``noise`` of every split."""
    chosen: set[int] = set()
    start = 0
    for size in sizes:
        chosen.update(rng.sample(range(start, start + size), round(noise * size)))
        start += size
    return chosen


def _pick(
    sizes: Sequence[int],
    rng: random.Random,
    share: float,
    eligible: Callable[[int], bool],
    of_split: bool = False,
) -> set[int]:
    """At random, ``share`` of each split's eligible posts (with ``of_split``: as many as that
    share of all its posts, as far as there are eligible ones), so shares hold per split."""
    chosen: set[int] = set()
    start = 0
    for size in sizes:
        candidates = [i for i in range(start, start + size) if eligible(i)]
        wanted = round(share * (size if of_split else len(candidates)))
        chosen.update(rng.sample(candidates, min(wanted, len(candidates))))
        start += size
    return chosen


def _knob_rng(seed: int, knob: str) -> random.Random:
    """A random stream of one knob's own, so that turning it on leaves the main stream (and
    what the other knobs pick) as it was up to where the knob's words or boxes change it."""
    return random.Random(f"smner-synth:{seed}:{knob}")


def _donor_types(
    own: tuple[str, ...],
    all_types: Sequence[tuple[str, ...]],
    rng: random.Random,
    cache: dict[tuple[str, ...], list[tuple[str, ...]]] | None = None,
) -> tuple[str, ...]:
    """The types of another random post whose set of types differs: wrong cues for a noisy post.
    The candidates depend only on the set of ``own`` types, so ``cache`` keeps them by it (the
    same list, so the same draw, in linear rather than quadratic time)."""
    key = tuple(sorted(own))
    if cache is None or key not in cache:
        candidates = [t for t in all_types if t and tuple(sorted(t)) != key]
        if cache is None:
            return rng.choice(candidates)
        cache[key] = candidates
    return rng.choice(cache[key])


def _pattern(hint: str | None, region: str | None) -> str | None:
    """The words around a name: its type hint ("coach {}"), then where its cue is."""
    if region is None:
        return hint
    return f"{hint or '{}'} {POSITION_WORDS[region]}"


class Planner:
    """Plans posts one by one: names, texts and default boxes from the main RNG, in the order
    earlier versions drew them, and each newer knob from its own stream, only when it is on."""

    def __init__(
        self,
        rng: random.Random,
        seed: int,
        sizes: Sequence[int],
        all_types: Sequence[tuple[str, ...]],
        noisy: set[int],
        image_size: int,
        ungroundable: float,
        knobs: Knobs,
        images_per_post: int = 1,
    ) -> None:
        self.rng, self.seed, self.all_types = rng, seed, all_types
        self.images_per_post = images_per_post
        self.image_size, self.ungroundable, self.knobs = image_size, ungroundable, knobs
        self.names = {kind: Dealer(NAMES, rng) for kind in TYPES}
        self.streams = {
            name: _knob_rng(seed, name)
            for name in ("unrelated", "text_cues", "position_words", "cue_size", "distractors")
        }
        self.noisy = noisy
        self.donors: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        self.unrelated = _pick(
            sizes, self.streams["unrelated"], knobs.unrelated, lambda i: i not in noisy, True
        )
        own = set(range(sum(sizes))) - noisy - self.unrelated
        self.text_cued = _pick(
            sizes, self.streams["text_cues"], knobs.text_cues, lambda i: bool(all_types[i])
        )
        self.positioned = _pick(
            sizes,
            self.streams["position_words"],
            knobs.position_words,
            lambda i: len(all_types[i]) == 2 and i in own,
        )
        self.distracted = _pick(
            sizes, self.streams["distractors"], knobs.distractors, lambda i: i not in self.unrelated
        )

    def plan(self, index: int, split: str) -> SynthPost:
        """The post at ``index``: names, words, cue boxes and distractors."""
        types = self.all_types[index]
        chosen: list[str] = []
        for kind in types:
            chosen.append(self.names[kind].deal(avoid=chosen[0] if chosen else None))
        image = (
            "mismatched"
            if index in self.noisy
            else "unrelated"
            if index in self.unrelated
            else "own"
        )
        left_out = self._left_out(image, types)
        hints = self._text_cues(index, types, left_out)
        regions = self._regions(index)
        positions = tuple(
            None if regions is None or left_out[slot] else regions[slot]
            for slot in range(len(types))
        )
        patterns = [_pattern(hint, region) for hint, region in zip(hints, positions, strict=True)]
        reserve = sum(extra_words(pattern) for pattern in patterns)
        templates = fitting_templates(chosen, reserve, placed=True) if any(positions) else None
        tokens, spans = compose_post(self.rng, chosen, reserve, templates)
        if reserve:
            tokens, spans = with_type_words(tokens, spans, patterns)
        cues = self._cues(image, types, left_out, regions)
        base = f"synth{self.seed}-{index:05d}"
        ids: tuple[str, ...] = ()
        scenery_objects: tuple[Distractor, ...] = ()
        if self.images_per_post == 1:
            distractors = self._distractors(index, image, cues)
        else:
            ids = image_ids(base, self.images_per_post)
            cues, distractors, scenery_objects = self._spread(index, image, cues, positions)
        return SynthPost(
            index=index,
            split=split,
            image_id=ids[0] if ids else base,
            tokens=tuple(tokens),
            entities=tuple(
                Entity(start, end, kind) for (start, end), kind in zip(spans, types, strict=True)
            ),
            cues=cues,
            image=image,
            text_cued=index in self.text_cued,
            hints=hints,
            positions=positions,
            distractors=distractors,
            extended=self.knobs.extended,
            image_ids=ids,
            scenery=scenery_objects,
        )

    def _left_out(self, image: str, types: tuple[str, ...]) -> list[str | None]:
        """Per entity, the hint that names its type because its cue is left out of its image
        (``ungroundable``), else None; at 0 nothing is drawn, as in earlier versions. A post
        with an unrelated image gets the hints its own image would have had, so that its text
        is the same as without ``unrelated``."""
        if self.ungroundable > 0 and image != "mismatched":
            return [
                self.rng.choice(TYPE_HINTS[kind]) if self.rng.random() < self.ungroundable else None
                for kind in types
            ]
        return [None] * len(types)

    def _text_cues(
        self, index: int, types: tuple[str, ...], left_out: Sequence[str | None]
    ) -> tuple[str | None, ...]:
        """Per entity, the pattern of words that tell its type: a left-out entity's hint, and
        in a post picked for text cues, words from ``TEXT_CUES`` for every other entity."""
        stream = self.streams["text_cues"]
        return tuple(
            f"{hint} {{}}"
            if hint is not None
            else stream.choice(TEXT_CUES[kind])
            if index in self.text_cued
            else None
            for kind, hint in zip(types, left_out, strict=True)
        )

    def _regions(self, index: int) -> tuple[str, str] | None:
        """The two regions a post picked for position words names, None for other posts."""
        if index not in self.positioned:
            return None
        return self.streams["position_words"].choice(REGION_PAIRS)

    def _cues(
        self,
        image: str,
        types: tuple[str, ...],
        left_out: Sequence[str | None],
        regions: tuple[str, str] | None,
    ) -> tuple[Cue, ...]:
        """What the image shows: its entities' cues (less those left out), another post's
        cues on a mismatched image, nothing on an unrelated one.

        The main stream always draws the boxes a default corpus would; other boxes come from
        the knobs' streams. So cue size, unrelated images and distractors leave every text
        and label as they were, and corpora that differ only in those compare post by post.
        """
        size, cue_size = self.image_size, self.knobs.cue_size
        if image == "mismatched":
            types = _donor_types(types, self.all_types, self.rng, self.donors)
        laid_out = layout(types, size, self.rng)
        if image == "unrelated":
            return ()
        if regions is not None:
            laid_out = placed_layout(types, regions, size, self.streams["position_words"], cue_size)
        elif cue_size is not None:
            laid_out = layout(types, size, self.streams["cue_size"], cue_size)
        if image == "mismatched":
            return laid_out
        return tuple(
            Cue(cue.type, cue.box, slot)
            for slot, cue in enumerate(laid_out)
            if left_out[slot] is None
        )

    def _distractors(self, index: int, image: str, cues: Sequence[Cue]) -> tuple[Distractor, ...]:
        """The objects that show no type: the scene of an unrelated image, or the one extra
        object of a post picked for distractors, clear of its cues."""
        size = self.image_size
        if image == "unrelated":
            stream = self.streams["unrelated"]
            return place_distractors(stream, size, (), stream.randint(*SCENE_OBJECTS))
        if index in self.distracted:
            boxes = [cue.box for cue in cues]
            return place_distractors(self.streams["distractors"], size, boxes, 1)
        return ()

    def _spread(
        self,
        index: int,
        image: str,
        cues: Sequence[Cue],
        positions: Sequence[str | None],
    ) -> tuple[tuple[Cue, ...], tuple[Distractor, ...], tuple[Distractor, ...]]:
        """A post of several images: the one-image plan's cues spread over its images, the
        ``--distractors`` object, and the scenery of the images left without a cue. Only the
        post's own stream is drawn from, so texts and labels stay those of one image."""
        rng, count, size = post_rng(self.seed, index), self.images_per_post, self.image_size
        regions = [None if cue.entity is None else positions[cue.entity] for cue in cues]
        spread = spread_cues(cues, regions, count, size, rng, self.knobs.cue_size)
        extra = extra_distractor(spread, count, size, rng) if index in self.distracted else ()
        return spread, extra, scenery(spread, extra, count, size, rng, image == "unrelated")
