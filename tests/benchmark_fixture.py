"""A small stand-in for the Twitter-2015/2017 benchmark, written at test time.

The real files (``../shared/data``, see its README) are never committed, and a fresh clone has
no copy of them, so the tests that read them also run on this generated set. It has the real
layout and the quirks the tests rely on:

- ``IMGID:<id>`` line, then ``token<TAB>tag`` lines, a blank line between posts;
- Twitter-2015 spells the fourth type ``OTHER`` and its files end without a blank line;
  Twitter-2017 spells it ``MISC`` and its files end with one;
- entities that begin with ``I-`` (after ``O``, at the start of a post, after another type),
  only in Twitter-2015, as in the real data;
- entity lengths of 1 to 6 tokens; a few Twitter-2015 tokens (``U.S.``) that the tweet
  tokenizer splits, as the benchmark's own tokenisation sometimes differs from ours;
- images in ``images/<set>/<IMGID>.jpg``: most posts have none (missing), some are JPEG, two
  are PNG data under a ``.jpg`` name (``113.jpg``, RGBA, and ``33.jpg``, as in the real set),
  and some are truncated JPEGs.

The generator writes the text itself, without smner's writer, and counts what it wrote
(:class:`SplitFacts`), so tests compare smner's readers and statistics with an independent
count.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: split file (relative to the data root) -> number of posts in the generated set
SPLITS: dict[str, int] = {
    "twitter2015/train.txt": 120,
    "twitter2015/valid.txt": 40,
    "twitter2015/test.txt": 60,
    "twitter2017/train.txt": 100,
    "twitter2017/valid.txt": 40,
}

#: facts about the real files, from ../shared/data/README.md
REAL_POSTS = {
    "twitter2015/train.txt": 4000,
    "twitter2015/valid.txt": 1000,
    "twitter2015/test.txt": 3257,
    "twitter2017/train.txt": 3373,
    "twitter2017/valid.txt": 723,
}
REAL_I_STARTS = {
    "twitter2015/train.txt": 186,
    "twitter2015/valid.txt": 53,
    "twitter2015/test.txt": 135,
}

NAMES = {
    "PER": [["George"], ["Donald", "Trump"], ["Mary", "Jane", "Watson"], ["@george_w"]],
    "LOC": [["Paris"], ["New", "York"], ["Rio", "de", "Janeiro"], ["#NewYork"]],
    "ORG": [["Apple"], ["Real", "Madrid"], ["New", "York", "Times"], ["@NASA"]],
    "MISC": [
        ["Olympics"],
        ["Super", "Bowl"],
        ["Game", "of", "Thrones", "season", "two", "finale"],
        ["#WorldCup"],
    ],
}
FILLER = [
    "RT",
    ":",
    "the",
    "in",
    "at",
    "loves",
    "visited",
    "with",
    "and",
    "today",
    "is",
    "great",
    "!",
    "?",
    ",",
    ".",
    "...",
    "10:30",
    "1st",
    "&amp;",
    "😀",
    "state-of-the-art",
    "#tbt",
    "@someone_",
]


@dataclass
class SplitFacts:
    """What the generator wrote into one split file."""

    posts: int = 0
    #: entities as seqeval's default mode counts them (an I- start opens an entity)
    entities: int = 0
    i_starts: int = 0
    longest: int = 0
    #: posts whose re-tokenised text differs from their tokens (a split token)
    retokenised_differently: int = 0
    #: status of each post's image: "ok", "missing" or "truncated" -> posts
    images: dict[str, int] = field(default_factory=dict)
    image_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Benchmark:
    """A data folder in the benchmark layout: the real one or the generated one."""

    root: Path
    generated: bool
    #: for the generated set, everything it wrote; for the real one, None
    facts: dict[str, SplitFacts] | None = None

    @property
    def name(self) -> str:
        return "generated" if self.generated else "real"

    def files(self) -> list[Path]:
        return sorted(self.root.glob("twitter20*/*.txt"))

    def posts(self, split: str) -> int:
        return self.facts[split].posts if self.facts is not None else REAL_POSTS[split]

    def i_starts(self, split: str) -> int:
        return self.facts[split].i_starts if self.facts is not None else REAL_I_STARTS[split]


def noise_image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels, mode=mode)


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _post(rng: random.Random, year: str, facts: SplitFacts) -> list[tuple[str, str]]:
    """One post's (token, tag) pairs, counted into ``facts``."""
    other = "OTHER" if year == "2015" else "MISC"
    pairs: list[tuple[str, str]] = []
    previous_type: str | None = None  # the type of the entity that ends right before
    for _ in range(rng.randint(1, 3)):
        for _ in range(rng.randint(0 if pairs else 1, 3)):
            pairs.append((rng.choice(FILLER), "O"))
            previous_type = None
        kind = rng.choice(["PER", "LOC", "ORG", "MISC"])
        words = rng.choice(NAMES[kind])
        if year == "2015" and kind == "LOC" and rng.random() < 0.04:
            words = ["U.S."]  # the tweet tokenizer splits it: U . S .
        label = other if kind == "MISC" else kind
        # Twitter-2015 has entities that begin with I- (after O, first in a post, or right
        # after an entity of another type); Twitter-2017 has none. An I- right after an
        # entity of the same type would continue that entity, so it is not written.
        i_start = False
        if year == "2015" and previous_type != label:
            i_start = rng.random() < (0.5 if previous_type is not None else 0.12)
        for position, word in enumerate(words):
            prefix = "B" if position == 0 and not i_start else "I"
            pairs.append((word, f"{prefix}-{label}"))
        facts.entities += 1
        facts.i_starts += i_start
        facts.longest = max(facts.longest, len(words))
        previous_type = label
    if rng.random() < 0.5:
        pairs.append((f"http://t.co/{rng.randrange(16**8):08x}", "O"))
    if any(word == "U.S." for word, _ in pairs):
        facts.retokenised_differently += 1
    return pairs


def write_benchmark(root: Path, seed: int = 2015) -> Benchmark:
    """The generated benchmark under ``root`` (text files and images)."""
    rng = random.Random(seed)
    facts: dict[str, SplitFacts] = {}
    next_id = {"2015": 1000, "2017": 0}
    for split, count in SPLITS.items():
        year = split[len("twitter") : len("twitter2015")]
        images = root / "images" / f"twitter{year}"
        images.mkdir(parents=True, exist_ok=True)
        (root / f"twitter{year}").mkdir(parents=True, exist_ok=True)
        split_facts = facts[split] = SplitFacts(images={"ok": 0, "missing": 0, "truncated": 0})
        blocks = []
        for i in range(count):
            if split == "twitter2015/train.txt" and i < 2:
                image_id = ["113", "33"][i]  # the real set's PNG files named .jpg
            elif year == "2015":
                image_id = str(next_id[year])
            else:
                image_id = f"16_05_01_{next_id[year]}"
            next_id[year] += 1
            status = _write_image(images, image_id, i, rng)
            split_facts.images[status] += 1
            split_facts.image_ids.append(image_id)
            pairs = _post(rng, year, split_facts)
            split_facts.posts += 1
            blocks.append(f"IMGID:{image_id}\n" + "".join(f"{w}\t{t}\n" for w, t in pairs))
        # Twitter-2015's files end after the last token line, Twitter-2017's with a blank line
        text = "\n".join(blocks) + ("\n" if year == "2017" else "")
        (root / split).write_text(text, encoding="utf-8")
    return Benchmark(root, generated=True, facts=facts)


def _write_image(folder: Path, image_id: str, index: int, rng: random.Random) -> str:
    """The post's image file (or none); its status as the image loader should report it."""
    path = folder / f"{image_id}.jpg"
    seed = rng.randrange(2**31)
    if image_id == "113":
        path.write_bytes(encoded(noise_image(40, 14, seed, "RGBA"), "PNG"))
        return "ok"
    if image_id == "33":
        path.write_bytes(encoded(noise_image(40, 24, seed), "PNG"))
        return "ok"
    roll = index % 10
    if roll in (2, 5):
        path.write_bytes(encoded(noise_image(32, 24, seed), "JPEG"))
        return "ok"
    if roll == 7:
        data = encoded(noise_image(32, 24, seed), "JPEG")
        path.write_bytes(data[: len(data) // 2])
        return "truncated"
    return "missing"
