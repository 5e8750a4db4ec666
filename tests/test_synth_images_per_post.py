"""``smner synth --images-per-post K``: each post names K images, each entity's cue is in exactly
one of them (the first-mentioned entity's in the lower-indexed image), one box file per image,
and K = 1 writes the corpus of earlier versions."""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import pytest
from PIL import Image

from smner.commands import synth as synth_command
from smner.data.boxes import normalise_name, read_voc
from smner.data.conll import read_conll
from smner.errors import SmnerError
from smner.synth.corpus import SPLITS, build_posts, generate_corpus
from smner.synth.distractor_painters import DISTRACTORS
from smner.synth.knobs import REALISTIC
from smner.synth.layout import region_box

K = 3
SIZE = 64
#: mismatched and unrelated posts, a left-out entity now and then, a distractor knob
KNOBS = {"noise": 0.2, "unrelated": 0.2, "ungroundable": 0.2, "distractors": 0.5}


def read_meta(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "meta.jsonl").read_text().splitlines()]


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smner")
    synth_command.register(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(argv)


def disjoint(a, b) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    generate_corpus(root, posts=40, seed=4, image_size=SIZE, images_per_post=K, **KNOBS)
    return root


def test_imgid_lines_name_k_images_that_exist(corpus: Path) -> None:
    meta = read_meta(corpus)
    by_id = {record["image_id"]: record for record in meta}
    read = 0
    for split in SPLITS:
        lines = (corpus / f"{split}.txt").read_text().splitlines()
        heads = [line for line in lines if line.startswith("IMGID:")]
        for example, head in zip(read_conll(corpus / f"{split}.txt"), heads, strict=True):
            read += 1
            assert example.image_ids is not None and len(example.image_ids) == K
            assert head == "IMGID:" + " ".join(example.image_ids)
            record = by_id[example.image_id]
            assert example.image_ids == record["image_ids"]
            assert example.image_id == record["image_ids"][0]
            base = record["image_ids"][0].removesuffix("_0")
            assert record["image_ids"] == [f"{base}_{k}" for k in range(K)]
            assert example.tokens == record["tokens"]
            for image_id in example.image_ids:
                assert (corpus / "boxes" / f"{image_id}.xml").is_file()
                with Image.open(corpus / "images" / f"{image_id}.jpg") as image:
                    assert (image.format, image.size) == ("JPEG", (SIZE, SIZE))
    assert read == len(meta) == 40
    assert len(list((corpus / "images").iterdir())) == 40 * K
    assert len(list((corpus / "boxes").iterdir())) == 40 * K


def test_each_cue_is_in_exactly_one_image_and_its_box_file(corpus: Path) -> None:
    """meta's image_index names the one VOC file (of that image, in its pixels) that holds the
    entity's box; the other images' files do not name the entity."""
    entity_cues = 0
    for record in read_meta(corpus):
        vocs = [read_voc(corpus / "boxes" / f"{i}.xml") for i in record["image_ids"]]
        assert all(voc.size == (SIZE, SIZE) for voc in vocs)
        cue_images = [cue["image_index"] for cue in record["cues"]]
        assert len(set(cue_images)) == len(cue_images)  # never two cues in one image
        expected: list[dict] = [{} for _ in range(K)]
        for cue in record["cues"]:
            x0, y0, x1, y1 = cue["box"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert 0 <= cue["image_index"] < K
            if cue["entity"] is None:
                continue
            entity_cues += 1
            start, end, kind = record["entities"][cue["entity"]]
            assert cue["type"] == kind
            name = normalise_name(" ".join(record["tokens"][start:end]))
            expected[cue["image_index"]][name] = [tuple(cue["box"])]
        assert [voc.boxes for voc in vocs] == expected
    assert entity_cues > 10


def test_two_entity_posts_put_the_first_mentioned_cue_in_the_lower_image(corpus: Path) -> None:
    pairs = 0
    for record in read_meta(corpus):
        own = [cue for cue in record["cues"] if cue["entity"] is not None]
        if len(own) == 2:
            pairs += 1
            first, second = sorted(own, key=lambda cue: cue["entity"])
            assert first["image_index"] < second["image_index"]
    assert pairs > 0


def test_images_without_a_cue_show_scenery_or_nothing(corpus: Path) -> None:
    kinds: collections.Counter[str] = collections.Counter()
    empty = 0
    for record in read_meta(corpus):
        shown = {cue["image_index"] for cue in record["cues"]}
        scenery_images = {obj["image_index"] for obj in record["scenery"]}
        assert not shown & scenery_images
        empty += len(set(range(K)) - shown - scenery_images)
        kinds.update(obj["kind"] for obj in record["scenery"])
        for k in range(K):
            in_image = [
                o["box"]
                for o in record["scenery"] + record["distractors"] + record["cues"]
                if o["image_index"] == k
            ]
            for i, box in enumerate(in_image):
                assert all(disjoint(box, other) for other in in_image[i + 1 :])
        for obj in record["distractors"]:  # the --distractors object shares an image with a cue
            assert obj["image_index"] in shown or not shown
    assert set(kinds) <= set(DISTRACTORS) and kinds
    assert empty > 0


def test_mismatched_and_unrelated_posts(corpus: Path) -> None:
    """A mismatched post shows another post's types, one cue per image and no entity's box;
    all images of an unrelated post are scenes of no type."""
    meta = read_meta(corpus)
    mismatched = [r for r in meta if r["image"] == "mismatched"]
    unrelated = [r for r in meta if r["image"] == "unrelated"]
    assert mismatched and unrelated
    for record in mismatched:
        assert record["cues"] and all(cue["entity"] is None for cue in record["cues"])
        types = [kind for _, _, kind in record["entities"]]
        assert sorted(c["type"] for c in record["cues"]) != sorted(types)
    for record in unrelated:
        assert record["cues"] == [] and record["distractors"] == []
        assert {obj["image_index"] for obj in record["scenery"]} == set(range(K))
    for record in mismatched + unrelated:
        for image_id in record["image_ids"]:
            assert read_voc(corpus / "boxes" / f"{image_id}.xml").boxes == {}


def test_texts_and_labels_are_those_of_one_image() -> None:
    one = build_posts(60, seed=2, image_size=SIZE, position_words=0.5, **REALISTIC)
    many = build_posts(
        60, seed=2, image_size=SIZE, position_words=0.5, images_per_post=2, **REALISTIC
    )
    assert [(p.tokens, p.entities, p.image) for p in one] == [
        (p.tokens, p.entities, p.image) for p in many
    ]
    for a, b in zip(one, many, strict=True):
        assert [(c.type, c.entity) for c in a.cues] == [(c.type, c.entity) for c in b.cues]
        assert b.image_ids == (f"{a.image_id}_0", f"{a.image_id}_1")


def test_position_words_and_cue_size_hold_in_each_image() -> None:
    size, (lo, hi) = 200, (0.3, 0.4)
    posts = build_posts(
        200, seed=7, image_size=size, position_words=1.0, cue_size=(lo, hi), images_per_post=4
    )
    placed = 0
    for post in posts:
        for cue in post.cues:
            x0, y0, x1, y1 = cue.box
            longer = max(x1 - x0, y1 - y0)
            region = post.positions[cue.entity] if cue.entity is not None else None
            if region is None:
                assert lo * size - 1 <= longer <= hi * size + 1
            else:
                placed += 1
                rx0, ry0, rx1, ry1 = region_box(region, size)
                assert rx0 <= x0 < x1 <= rx1 and ry0 <= y0 < y1 <= ry1
    assert placed > 0


def test_images_per_post_1_is_the_default_corpus(tmp_path: Path) -> None:
    generate_corpus(tmp_path / "a", posts=20, seed=2, noise=0.3, image_size=SIZE)
    generate_corpus(tmp_path / "b", posts=20, seed=2, noise=0.3, image_size=SIZE, images_per_post=1)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")
    record = read_meta(tmp_path / "b")[0]
    assert "image_ids" not in record and "scenery" not in record
    assert all("image_index" not in cue for cue in record["cues"])


def test_same_arguments_write_the_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate_corpus(tmp_path / name, posts=20, seed=1, image_size=SIZE, images_per_post=2)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")


def test_cli_writes_k_images_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["synth", "--output", str(tmp_path), "--posts", "20", "--image-size", str(SIZE)]
    args = cli([*argv, "--images-per-post", "2"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "images: 40 (2 per post)" in out
    examples = [e for split in SPLITS for e in read_conll(tmp_path / f"{split}.txt")]
    assert len(examples) == 20 and all(len(e.image_ids or ()) == 2 for e in examples)


def test_help_documents_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--images-per-post K" in text and "1 to 8" in text and "image_index" in text


@pytest.mark.parametrize("value", ["0", "9", "-1", "2.5", "two"])
def test_cli_refuses_bad_counts(tmp_path: Path, value: str) -> None:
    out = tmp_path / "out"
    args = cli(["synth", "--output", str(out), "--posts", "20", "--images-per-post", value])
    with pytest.raises(SmnerError, match="images per post is a whole number from 1 to 8"):
        args.handler(args)
    assert not out.exists()


@pytest.mark.parametrize("value", [0, 9, 2.0, True])
def test_generate_corpus_refuses_bad_counts(tmp_path: Path, value: object) -> None:
    with pytest.raises(SmnerError, match="images per post"):
        generate_corpus(tmp_path / "out", posts=20, images_per_post=value)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
