"""One planned post of the generated corpus and what generating a corpus wrote: the post's
example, its benchmark-format text, VOC boxes, meta.jsonl record and image files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smner.data.boxes import format_voc
from smner.data.spans import entities_to_bio
from smner.data.types import Entity, Example
from smner.synth.images import encode_images
from smner.synth.layout import (
    Cue,
    Distractor,
)
from smner.synth.multi_image import (
    box_files,
)


@dataclass(frozen=True, slots=True)
class SynthPost:
    """One planned post: its text and labels, the cues its image shows, and what else.

    ``image`` is one of :data:`~smner.synth.corpus.IMAGE_KINDS`; ``text_cued`` says that the
    post was picked for text cues; ``hints`` holds, per entity, the pattern of words around its
    name that tell its type ("coach {}", or an ungroundable entity's hint; None where the text
    does not);
    ``positions`` the region its position words name (None: none); ``extended`` says that the
    corpus uses knobs beyond noise and ungroundable, so that :meth:`meta` records them (and
    corpora without them stay the same). A post of several images names them in ``image_ids``
    (``image_id`` is the first; empty for one image), each cue and distractor says which image
    shows it, and ``scenery`` holds the objects of its images that show no cue.
    """

    index: int
    split: str
    image_id: str
    tokens: tuple[str, ...]
    entities: tuple[Entity, ...]
    cues: tuple[Cue, ...]
    image: str = "own"
    text_cued: bool = False
    hints: tuple[str | None, ...] = ()
    positions: tuple[str | None, ...] = ()
    distractors: tuple[Distractor, ...] = ()
    extended: bool = False
    image_ids: tuple[str, ...] = ()
    scenery: tuple[Distractor, ...] = ()

    @property
    def noisy(self) -> bool:
        """Whether the image shows other posts' cues (a mismatched image)."""
        return self.image == "mismatched"

    def example(self) -> Example:
        """The post as the data reader will return it."""
        tags = entities_to_bio(self.entities, len(self.tokens))
        return Example(
            tokens=list(self.tokens),
            tags=tags,
            image_id=self.image_id,
            post_id=self.image_id,
            entities=list(self.entities),
            image_ids=list(self.image_ids) or None,
        )

    def voc(self, image_size: int) -> str:
        """The post's entity boxes as VOC XML: each entity's own cue, named by its text (a post
        with a mismatched image shows other posts' cues, so its entities have none, and an
        entity whose cue was left out has none either)."""
        objects = [(name, cue.box) for name, cue in self._named_cues()]
        return format_voc(self.image_id, (image_size, image_size), objects)

    def box_files(self, image_size: int) -> list[tuple[str, str]]:
        """``(image id, VOC XML)`` per image: :meth:`voc`, or for a post of several images one
        file per image with the cues drawn in it."""
        if not self.image_ids:
            return [(self.image_id, self.voc(image_size))]
        return box_files(self.image_ids, image_size, self._named_cues())

    def image_files(self, seed: int, image_size: int) -> list[tuple[str, bytes]]:
        """``(image id, JPEG bytes)`` of each of the post's images (see
        :mod:`smner.synth.images`)."""
        objects = (*self.distractors, *self.scenery)
        ids = self.image_ids or (self.image_id,)
        return encode_images(seed, self.index, image_size, ids, self.cues, objects)

    def _named_cues(self) -> list[tuple[str, Cue]]:
        """The cues of the post's own entities, each with its entity's text."""
        named = []
        for cue in self.cues:
            if cue.entity is not None:
                entity = self.entities[cue.entity]
                named.append((" ".join(self.tokens[entity.start : entity.end]), cue))
        return named

    def meta(self) -> dict[str, Any]:
        """The line of ``meta.jsonl`` that documents the post; in an ``extended`` corpus also
        where its image comes from, which entities' words tell their type (and the words),
        where the text places them, and the distractors drawn. A post of several images adds
        their ids, the image of each cue and distractor (``image_index``) and their scenery."""
        multi = bool(self.image_ids)

        def at(item: Cue | Distractor) -> dict[str, int]:
            return {"image_index": item.image} if multi else {}

        record: dict[str, Any] = {
            "split": self.split,
            "image_id": self.image_id,
            **({"image_ids": list(self.image_ids)} if multi else {}),
            "tokens": list(self.tokens),
            "entities": [[e.start, e.end, e.type] for e in self.entities],
            "cues": [
                {"type": c.type, "box": list(c.box), "entity": c.entity, **at(c)} for c in self.cues
            ],
            "noisy": self.noisy,
        }
        if multi:
            record["scenery"] = [
                {"kind": d.kind, "box": list(d.box), **at(d)} for d in self.scenery
            ]
        if self.extended:
            hints = self.hints or (None,) * len(self.entities)
            positions = self.positions or (None,) * len(self.entities)
            record.update(
                image=self.image,
                text_cue=[hint is not None for hint in hints],
                hints=list(hints),
                position_words=any(positions),
                positions=list(positions),
                distractors=[
                    {"kind": d.kind, "box": list(d.box), **at(d)} for d in self.distractors
                ],
            )
        return record


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
    #: posts with an unrelated image, whose words tell types, with position words, with an
    #: extra distractor (what the knobs beyond noise did)
    unrelated: int = 0
    text_cued: int = 0
    positioned: int = 0
    distracted: int = 0
    images_per_post: int = 1

    def format(self) -> str:
        """A few lines for the command line (a knob's line only where it did something)."""
        splits = ", ".join(f"{name} {count}" for name, count in self.posts.items())
        types = ", ".join(f"{name} {count}" for name, count in self.entities.items())
        optional = (
            ("entities not in their image", self.ungroundable),
            ("unrelated images", self.unrelated),
            ("posts whose words tell the types", self.text_cued),
            ("posts with position words", self.positioned),
            ("images with a distractor", self.distracted),
        )
        return (
            f"wrote a synthetic corpus to {self.output}\n"
            f"  posts: {splits}\n"
            f"  entities: {types}\n"
            f"  noisy images: {self.noisy}\n"
            + "".join(f"  {label}: {count}\n" for label, count in optional if count)
            + f"  images: {self.images}"
            + (f" ({self.images_per_post} per post)" if self.images_per_post > 1 else "")
        )
