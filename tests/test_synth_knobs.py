"""The knobs of ``smner synth`` that make a corpus test each module (issue 30, item 1): each does
what it says, is recorded in meta.jsonl, and at its default changes no byte of the corpus."""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
from pathlib import Path

import PIL
import pytest

from smner.commands import synth as synth_command
from smner.data.boxes import read_voc
from smner.errors import SmnerError
from smner.synth.corpus import (
    SPLITS,
    SynthPost,
    build_posts,
    generate_corpus,
    split_sizes,
)
from smner.synth.distractor_painters import DISTRACTORS
from smner.synth.knobs import REALISTIC, parse_cue_size
from smner.synth.layout import REGION_PAIRS, REGIONS, region_box
from smner.synth.text import MAX_TOKENS, MIN_TOKENS, POSITION_WORDS, TEXT_CUES, pattern_words

#: SHA-256 of train/valid/test.txt and meta.jsonl, concatenated, as written before the knobs
#: existed (computed from the code of commit 60ecbba).
BEFORE_KNOBS = {
    "posts 60, seed 3": "bde2b4efcfaca736a638c326c3c67f83d626ed197be7a14c01a936469bb5e5c4",
    "posts 60, seed 3, noise 0.2, ungroundable 0.3": (
        "431e4af7919ead9a499ee77caa76776e4d0c50a97c5ae0e2ef3f850af95154ce"
    ),
}
#: The same, over every file (images and boxes too) of posts 20, seed 2, noise 0.3, 64 px,
#: with the Pillow that drew them (other Pillow versions may draw other pixels).
BEFORE_KNOBS_ALL_FILES = "ecf5de2f22b904d807956959cef756d105f6caa954e1d3936ab6d5e18a1862c5"
BEFORE_KNOBS_PILLOW = "13.0.0"

TEXT_FILES = ("train.txt", "valid.txt", "test.txt", "meta.jsonl")
NEW_KEYS = {"image", "text_cue", "hints", "position_words", "positions", "distractors"}


def digest(root: Path, names: list[str] | tuple[str, ...]) -> str:
    sha = hashlib.sha256()
    for name in names:
        sha.update((root / name).read_bytes())
    return sha.hexdigest()


def read_meta(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "meta.jsonl").read_text().splitlines()]


def split_counts(posts: list[SynthPost], chosen) -> dict[str, tuple[int, int]]:
    """Per split: (posts for which ``chosen`` holds, posts)."""
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for post in posts:
        counts[post.split][0] += bool(chosen(post))
        counts[post.split][1] += 1
    return {split: (a, b) for split, (a, b) in counts.items()}


def disjoint(a, b) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def inside(box, region) -> bool:
    return region[0] <= box[0] < box[2] <= region[2] and region[1] <= box[1] < box[3] <= region[3]


# --- defaults: the corpus of earlier versions, byte for byte ---------------------------------


@pytest.mark.parametrize(
    ("label", "kwargs"),
    [
        ("posts 60, seed 3", {}),
        ("posts 60, seed 3, noise 0.2, ungroundable 0.3", {"noise": 0.2, "ungroundable": 0.3}),
    ],
)
def test_defaults_write_the_corpus_of_earlier_versions(
    tmp_path: Path, label: str, kwargs: dict
) -> None:
    generate_corpus(tmp_path / "a", posts=60, seed=3, draw_images=False, **kwargs)
    assert digest(tmp_path / "a", TEXT_FILES) == BEFORE_KNOBS[label]
    explicit = {
        "text_cues": 0.0,
        "unrelated": 0.0,
        "two_entity": 0.3,
        "position_words": 0.0,
        "cue_size": None,
        "distractors": 0.0,
    }
    generate_corpus(tmp_path / "b", posts=60, seed=3, draw_images=False, **kwargs, **explicit)
    assert digest(tmp_path / "b", TEXT_FILES) == BEFORE_KNOBS[label]
    assert not NEW_KEYS & set(read_meta(tmp_path / "b")[0])


@pytest.mark.skipif(
    PIL.__version__ != BEFORE_KNOBS_PILLOW, reason="images drawn by another Pillow version"
)
def test_defaults_draw_the_images_of_earlier_versions(tmp_path: Path) -> None:
    generate_corpus(tmp_path, posts=20, seed=2, noise=0.3, image_size=64)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert digest(tmp_path, files) == BEFORE_KNOBS_ALL_FILES


def test_knobs_write_the_same_bytes_for_the_same_arguments(tmp_path: Path) -> None:
    knobs = {**REALISTIC, "position_words": 0.5, "ungroundable": 0.2}
    for name in ("a", "b"):
        generate_corpus(tmp_path / name, posts=30, seed=1, image_size=64, **knobs)
    files = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*"))
    assert len(files) > 60
    for name in files:
        if (tmp_path / "a" / name).is_file():
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_image_knobs_leave_texts_and_labels_as_they_were(tmp_path: Path) -> None:
    """Cue size, unrelated images and distractors change images only: corpora that differ in
    them can be compared post by post."""
    base = {"posts": 200, "seed": 1, "noise": 0.1, "ungroundable": 0.2, "draw_images": False}
    generate_corpus(tmp_path / "a", **base)
    generate_corpus(tmp_path / "b", **base, cue_size=(0.2, 0.4), unrelated=0.3, distractors=0.5)
    for name in ("train.txt", "valid.txt", "test.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read_meta(tmp_path / "a") != read_meta(tmp_path / "b")


# --- each knob ---------------------------------------------------------------------------------


def test_text_cues_tell_each_type_and_the_image_still_shows_the_cue() -> None:
    posts = build_posts(400, seed=7, text_cues=0.5)
    for split, (cued, total) in split_counts(
        [p for p in posts if p.entities], lambda p: p.text_cued
    ).items():
        assert cued == round(0.5 * total), split
    for post in posts:
        meta = post.meta()
        assert meta["text_cue"] == [post.text_cued] * len(post.entities)
        assert [cue.entity for cue in post.cues] == list(range(len(post.entities)))
        for entity, pattern in zip(post.entities, post.hints, strict=True):
            if not post.text_cued:
                assert pattern is None
                continue
            assert pattern in TEXT_CUES[entity.type]
            before, after = pattern_words(pattern)
            assert list(post.tokens[entity.start - len(before) : entity.start]) == before
            assert list(post.tokens[entity.end : entity.end + len(after)]) == after
        assert MIN_TOKENS <= len(post.tokens) <= MAX_TOKENS


def test_text_cues_are_distinct_per_type() -> None:
    """No pattern tells two types; every type has several."""
    patterns = [p for kind in TEXT_CUES.values() for p in kind]
    assert len(patterns) == len(set(patterns))
    assert all(len(kind) >= 5 for kind in TEXT_CUES.values())
    assert all(p.count("{}") == 1 and len(p.split()) <= 4 for p in patterns)


def test_noise_and_unrelated_are_disjoint_shares(tmp_path: Path) -> None:
    posts = build_posts(300, seed=2, noise=0.3, unrelated=0.2)
    sizes = dict(zip(SPLITS, split_sizes(300), strict=True))
    for kind, share in (("mismatched", 0.3), ("unrelated", 0.2)):
        counts = split_counts(posts, lambda p, kind=kind: p.image == kind)
        for split, (count, total) in counts.items():
            assert total == sizes[split]
            assert count == round(share * total), (kind, split)
    for post in posts:
        assert post.noisy == (post.image == "mismatched")
        if post.image == "unrelated":
            assert post.cues == ()
            assert 1 <= len(post.distractors) <= 3
            assert "<object>" not in post.voc(224)
        if post.image == "mismatched":
            assert post.cues and all(cue.entity is None for cue in post.cues)
        if post.image == "own" and post.entities:
            assert [cue.entity for cue in post.cues] == list(range(len(post.entities)))


def test_unrelated_images_have_no_boxes_on_disk(tmp_path: Path) -> None:
    generate_corpus(tmp_path, posts=40, seed=3, unrelated=0.5, image_size=64)
    unrelated = [m for m in read_meta(tmp_path) if m["image"] == "unrelated"]
    assert len(unrelated) == 20
    for record in unrelated:
        assert record["cues"] == [] and not record["noisy"]
        assert read_voc(tmp_path / "boxes" / f"{record['image_id']}.xml").boxes == {}


@pytest.mark.parametrize("share", [0.0, 0.5, 0.9])
def test_two_entity_share(share: float) -> None:
    posts = build_posts(400, seed=4, two_entity=share)
    for split, size in zip(SPLITS, split_sizes(400), strict=True):
        counts = collections.Counter(len(p.entities) for p in posts if p.split == split)
        assert counts[2] == round(share * size)
        assert abs(counts[0] - 0.1 * size) <= 1
        assert counts[1] == size - counts[0] - counts[2]


def test_position_words_place_each_cue_where_the_words_say() -> None:
    size = 224
    posts = build_posts(600, seed=6, position_words=0.5, text_cues=1.0, image_size=size)
    eligible = [p for p in posts if len(p.entities) == 2 and p.image == "own"]
    for split, (placed, total) in split_counts(eligible, lambda p: any(p.positions)).items():
        assert placed == round(0.5 * total), split
    seen_pairs = set()
    for post in posts:
        assert MIN_TOKENS <= len(post.tokens) <= MAX_TOKENS
        assert post.meta()["position_words"] == any(post.positions)
        if not any(post.positions):
            if len(post.cues) == 2:  # the convention: first mentioned left, second right
                assert post.cues[0].box[2] <= size / 2 <= post.cues[1].box[0]
            continue
        assert len(post.entities) == 2 and len(post.cues) == 2
        seen_pairs.add(tuple(post.positions))
        assert tuple(post.positions) in REGION_PAIRS
        assert disjoint(post.cues[0].box, post.cues[1].box)
        for cue in post.cues:
            entity, region = post.entities[cue.entity], post.positions[cue.entity]
            assert inside(cue.box, region_box(region, size)), (post.tokens, cue)
            words = POSITION_WORDS[region].split()
            hint_after = pattern_words(post.hints[cue.entity])[1]
            at = entity.end + len(hint_after)
            assert list(post.tokens[at : at + len(words)]) == words
    assert len(seen_pairs) > len(REGION_PAIRS) // 2  # not only left and right


def test_regions_name_what_they_cover() -> None:
    for name in REGIONS:
        x0, y0, x1, y1 = region_box(name, 100)
        assert ("left" in name) == (x1 == 50) and ("right" in name) == (x0 == 50)
        assert ("top" in name) == (y1 == 50) and ("bottom" in name) == (y0 == 50)
    for a, b in REGION_PAIRS:
        assert disjoint(region_box(a, 65), region_box(b, 65))


@pytest.mark.parametrize("cue_size", [(0.3, 0.5), (0.5, 0.5), (0.9, 1.0)])
def test_cue_size_bounds(cue_size: tuple[float, float]) -> None:
    size = 200
    lo, hi = cue_size
    posts = build_posts(
        300, seed=8, noise=0.2, position_words=0.5, cue_size=cue_size, image_size=size
    )
    for post in posts:
        for cue in post.cues:
            x0, y0, x1, y1 = cue.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            longer, shorter = max(x1 - x0, y1 - y0), min(x1 - x0, y1 - y0)
            assert shorter >= 0.8 * longer - 1
            if any(post.positions):
                limit = size // 2  # a quadrant or a half: at most the region named
                assert min(lo * size, limit) - 1 <= longer <= min(hi * size, size) + 1
            elif len(post.cues) == 2:
                assert lo * size / 2 - 1 <= longer <= hi * size / 2 + 1
                assert post.cues[0].box[2] <= size / 2 <= post.cues[1].box[0]
            else:
                assert lo * size - 1 <= longer <= hi * size + 1


def test_distractors_never_overlap_cues(tmp_path: Path) -> None:
    size = 224
    for knobs in ({"distractors": 0.5}, {**REALISTIC, "position_words": 0.5}):
        posts = build_posts(400, seed=9, image_size=size, **knobs)
        share = knobs["distractors"]
        eligible = [p for p in posts if p.image != "unrelated"]
        for split, (count, total) in split_counts(eligible, lambda p: p.distractors).items():
            assert round(share * total) - 2 <= count <= round(share * total), (knobs, split)
        for post in posts:
            assert len(post.distractors) <= (3 if post.image == "unrelated" else 1)
            boxes = [d.box for d in post.distractors]
            for i, box in enumerate(boxes):
                assert 0 <= box[0] < box[2] <= size and 0 <= box[1] < box[3] <= size
                assert all(disjoint(box, cue.box) for cue in post.cues)
                assert all(disjoint(box, other) for other in boxes[i + 1 :])
            assert {d.kind for d in post.distractors} <= set(DISTRACTORS)
    generate_corpus(tmp_path, posts=30, seed=9, distractors=1.0, image_size=64)
    for record in read_meta(tmp_path):
        assert record["distractors"] and record["image"] == "own"
        voc = read_voc(tmp_path / "boxes" / f"{record['image_id']}.xml")
        assert sum(len(v) for v in voc.boxes.values()) == len(record["cues"])


def test_meta_records_which_knobs_apply(tmp_path: Path) -> None:
    generate_corpus(tmp_path, posts=200, seed=5, draw_images=False, position_words=0.5, **REALISTIC)
    meta = read_meta(tmp_path)
    assert all(set(record) >= NEW_KEYS for record in meta)
    kinds = collections.Counter(record["image"] for record in meta)
    assert kinds == {"own": 140, "mismatched": 40, "unrelated": 20}
    with_entities = [record for record in meta if record["entities"]]
    told = sum(all(record["text_cue"]) for record in with_entities) / len(with_entities)
    assert 0.45 <= told <= 0.55
    for record in meta:
        assert len(record["text_cue"]) == len(record["hints"]) == len(record["entities"])
        assert len(record["positions"]) == len(record["entities"])
        assert record["noisy"] == (record["image"] == "mismatched")
        assert record["text_cue"] == [hint is not None for hint in record["hints"]]
    assert any(record["position_words"] for record in meta)
    distracted = sum(bool(r["distractors"]) for r in meta if r["image"] != "unrelated")
    assert distracted == pytest.approx(0.3 * 180, abs=3)


# --- the command line ------------------------------------------------------------------------


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smner")
    synth_command.register(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(["synth", "--output", "unused", *argv])


DEFAULTS = {
    "noise": 0.0,
    "text_cues": 0.0,
    "unrelated": 0.0,
    "two_entity": 0.3,
    "position_words": 0.0,
    "cue_size": None,
    "distractors": 0.0,
}


def test_realistic_sets_the_preset_and_options_override_it() -> None:
    assert synth_command.knob_settings(cli([])) == DEFAULTS
    assert synth_command.knob_settings(cli(["--realistic"])) == {**DEFAULTS, **REALISTIC}
    assert REALISTIC == {
        "text_cues": 0.5,
        "noise": 0.2,
        "unrelated": 0.1,
        "two_entity": 0.3,
        "cue_size": (0.3, 0.5),
        "distractors": 0.3,
    }
    given = ["--realistic", "--noise", "0", "--cue-size", "0.2-0.4", "--position-words", "0.5"]
    assert synth_command.knob_settings(cli(given)) == {
        **DEFAULTS,
        **REALISTIC,
        "noise": 0.0,
        "cue_size": (0.2, 0.4),
        "position_words": 0.5,
    }
    assert synth_command.knob_settings(cli(["--cue-size", "0.4"]))["cue_size"] == (0.4, 0.4)


def test_cli_writes_a_realistic_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--output", str(tmp_path), "--posts", "40", "--image-size", "64"]
    parser = argparse.ArgumentParser(prog="smner")
    synth_command.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args([*argv, "--realistic"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "unrelated images: 5" in out and "posts whose words tell the types" in out
    meta = read_meta(tmp_path)  # splits of 28, 6 and 6 posts: 20% is 6 + 1 + 1, 10% 3 + 1 + 1
    assert collections.Counter(m["image"] for m in meta)["mismatched"] == 8
    assert len(list((tmp_path / "images").iterdir())) == 40


def test_help_documents_every_knob(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["--help"])
    text = capsys.readouterr().out
    for option in (
        "--text-cues",
        "--unrelated",
        "--two-entity",
        "--position-words",
        "--cue-size",
        "--distractors",
        "--realistic",
        "--noise",
    ):
        assert option in text
    for key in NEW_KEYS:
        assert key in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--text-cues", "1.5"],
        ["--unrelated", "-0.1"],
        ["--two-entity", "0.95"],
        ["--position-words", "nan"],
        ["--distractors", "2"],
        ["--cue-size", "0-0.5"],
        ["--cue-size", "0.6-0.3"],
        ["--cue-size", "abc"],
        ["--cue-size", "1.2"],
        ["--cue-size", "0.3-"],
        ["--noise", "0.6", "--unrelated", "0.5"],
        ["--realistic", "--unrelated", "0.9"],
    ],
)
def test_bad_knobs_are_refused_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    out = tmp_path / "out"
    parser = argparse.ArgumentParser(prog="smner")
    synth_command.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["synth", "--output", str(out), "--posts", "20", *argv])
    with pytest.raises(SmnerError) as error:
        args.handler(args)
    assert "\n" not in str(error.value) and "got" in str(error.value)
    assert not out.exists()


def test_parse_cue_size() -> None:
    assert parse_cue_size("0.3-0.5") == (0.3, 0.5)
    assert parse_cue_size("1") == (1.0, 1.0)
    with pytest.raises(SmnerError, match=r"0\.3-0\.5"):
        parse_cue_size("0.5-0.3")
