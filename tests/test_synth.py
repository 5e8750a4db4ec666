"""The synthetic corpus: reproducible, readable, labelled by construction, text type-neutral."""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import pytest
from PIL import Image

from smner.commands import synth as synth_command
from smner.data.conll import read_conll
from smner.errors import SmnerError
from smner.synth.corpus import SPLITS, generate_corpus, split_sizes
from smner.synth.text import MAX_TOKENS, MIN_TOKENS, NAMES, TYPES

TINY = {"posts": 40, "image_size": 96}


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def read_meta(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "meta.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate_corpus(root, seed=0, noise=0.2, **TINY)
    return root


def test_same_seed_writes_identical_bytes(tiny: Path, tmp_path: Path) -> None:
    generate_corpus(tmp_path, seed=0, noise=0.2, **TINY)
    first, second = files_of(tiny), files_of(tmp_path)
    assert len(first) == 3 + 1 + 40 + 40  # splits, meta.jsonl, images, boxes
    assert first == second


def test_different_seed_differs(tiny: Path, tmp_path: Path) -> None:
    generate_corpus(tmp_path, seed=1, noise=0.2, **TINY)
    assert (tmp_path / "meta.jsonl").read_bytes() != (tiny / "meta.jsonl").read_bytes()
    assert (tmp_path / "train.txt").read_bytes() != (tiny / "train.txt").read_bytes()
    first = [(tiny / "images" / name).read_bytes() for name in sorted(files_of(tiny / "images"))]
    other = [(tmp_path / "images" / n).read_bytes() for n in sorted(files_of(tmp_path / "images"))]
    assert not set(first) & set(other)


def test_splits_read_back_and_match_meta(tiny: Path) -> None:
    meta = read_meta(tiny)
    expected = [s for s, n in zip(SPLITS, (28, 6, 6), strict=True) for _ in range(n)]
    assert [m["split"] for m in meta] == expected
    by_id = {m["image_id"]: m for m in meta}
    assert len(by_id) == 40
    total = 0
    for split in SPLITS:
        corpus = read_conll(tiny / f"{split}.txt")
        total += len(corpus)
        assert len(corpus) == sum(m["split"] == split for m in meta)
        for example in corpus:
            m = by_id[example.image_id]
            assert m["split"] == split
            assert example.tokens == m["tokens"]
            assert [[e.start, e.end, e.type] for e in example.entities] == m["entities"]
            assert MIN_TOKENS <= len(example.tokens) <= MAX_TOKENS
            for e in example.entities:
                assert all(token[:1].isupper() for token in example.tokens[e.start : e.end])
            with Image.open(tiny / "images" / f"{example.image_id}.jpg") as image:
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (96, 96))
    assert total == 40
    assert not (tiny / ".images.partial").exists()


def check_cues(meta: list[dict], size: int) -> None:
    """Labels agree with the drawn cues by construction (or the post is flagged noisy)."""
    for m in meta:
        entity_types = [label for _, _, label in m["entities"]]
        cue_types = [cue["type"] for cue in m["cues"]]
        for cue in m["cues"]:
            x0, y0, x1, y1 = cue["box"]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        if m["noisy"]:
            assert cue_types
            assert collections.Counter(cue_types) != collections.Counter(entity_types)
            continue
        assert cue_types == entity_types
        if len(m["cues"]) == 1:
            x0, y0, x1, y1 = m["cues"][0]["box"]
            assert 0.45 * size - 1 <= max(x1 - x0, y1 - y0) <= 0.9 * size + 1
        if len(m["cues"]) == 2:
            assert m["cues"][0]["box"][2] <= size / 2 <= m["cues"][1]["box"][0]
            assert len(set(entity_types)) == 2


def test_cues_match_labels(tiny: Path) -> None:
    check_cues(read_meta(tiny), 96)


def test_text_cannot_tell_the_type(tmp_path: Path) -> None:
    generate_corpus(tmp_path, posts=400, seed=3, noise=0.1, draw_images=False)
    assert not (tmp_path / "images").exists()
    meta = read_meta(tmp_path)
    check_cues(meta, 224)
    types_of: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for m in meta:
        for start, end, label in m["entities"]:
            types_of[" ".join(m["tokens"][start:end])][label] += 1
    assert set(types_of) == set(NAMES)
    for name, counts in types_of.items():
        assert set(counts) == set(TYPES), name
    per_type = collections.Counter(label for m in meta for _, _, label in m["entities"])
    assert max(per_type.values()) - min(per_type.values()) <= 4
    for split in SPLITS:
        counts = collections.Counter(len(m["entities"]) for m in meta if m["split"] == split)
        size = sum(counts.values())
        assert counts[1] == round(0.6 * size) and counts[2] == round(0.3 * size)


@pytest.mark.parametrize("noise", [0.0, 0.25, 1.0])
def test_noise_fraction_is_honoured(tmp_path: Path, noise: float) -> None:
    summary = generate_corpus(tmp_path, posts=200, seed=5, noise=noise, draw_images=False)
    meta = read_meta(tmp_path)
    for split, size in zip(SPLITS, split_sizes(200), strict=True):
        noisy = sum(m["noisy"] for m in meta if m["split"] == split)
        assert noisy == round(noise * size)
    assert summary.noisy == sum(m["noisy"] for m in meta) == pytest.approx(noise * 200, abs=2)
    check_cues(meta, 224)


def test_rewriting_a_folder_replaces_old_images(tiny: Path, tmp_path: Path) -> None:
    generate_corpus(tmp_path, seed=0, **TINY)
    generate_corpus(tmp_path, posts=20, seed=0, image_size=96)
    assert len(list((tmp_path / "images").iterdir())) == 20


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smner")
    synth_command.register(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(argv)


def test_cli_writes_a_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--output", str(tmp_path), "--posts", "20", "--image-size", "64"]
    args = cli([*argv, "--seed", "2", "--noise", "0.5"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "train 14, valid 3, test 3" in out
    assert sum(len(read_conll(tmp_path / f"{s}.txt")) for s in SPLITS) == 20


@pytest.mark.parametrize(
    ("option", "value"),
    [("--posts", "19"), ("--noise", "1.5"), ("--noise", "-0.1"), ("--image-size", "8")],
)
def test_cli_refuses_bad_arguments(tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "out"
    args = cli(["synth", "--output", str(out), "--posts", "20", option, value])
    with pytest.raises(SmnerError):
        args.handler(args)
    assert not out.exists()


def test_cli_help_describes_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["synth", "--help"])
    text = capsys.readouterr().out
    assert "train.txt" in text and "meta.jsonl" in text and "--noise" in text


def test_boxes_name_each_entity_with_its_own_cue(tiny: Path) -> None:
    """boxes/<id>.xml (VOC) holds each entity's cue box under the entity's text; a post with a
    mismatched image shows other posts' cues, so its entities have no box."""
    from smner.data.boxes import normalise_name, read_voc

    noisy_seen = 0
    for record in read_meta(tiny):
        voc = read_voc(tiny / "boxes" / f"{record['image_id']}.xml")
        assert voc.size == (96, 96)
        if record["noisy"]:
            noisy_seen += 1
            assert voc.boxes == {}
            continue
        expected = {
            normalise_name(" ".join(record["tokens"][start:end])): [tuple(cue["box"])]
            for (start, end, _), cue in zip(record["entities"], record["cues"], strict=True)
        }
        assert voc.boxes == expected
    assert noisy_seen > 0
