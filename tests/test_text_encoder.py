from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from smner.encoders.mpnet import assemble_split_zip
from smner.encoders.text import TextEncoder, WordTokenizer, load_tokenizer
from smner.errors import SmnerError
from smner.processing.batching import SHAPES, word_shape
from tests.tiny import make_text_encoder


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_text_encoder(tmp_path_factory.mktemp("text"))


def test_word_alignment_is_exact(tiny_text: Path) -> None:
    words = WordTokenizer(load_tokenizer(tiny_text), max_subwords_per_word=3)
    posts = [["George", "xyzzy", "\u00a0", "in"], ["Paris"]]
    out = words(posts)
    ids, owner, first = out["input_ids"], out["subword_word"], out["word_index"]
    assert ids[0, 0] == words.cls_id
    # each word's first sub-word is where word_index points, and owned by that word
    for w in range(4):
        assert owner[0, first[0, w]] == w
    # 'xyzzy' is cut to 3 pieces; the whitespace token still gets one (unknown) piece
    assert int((owner[0] == 1).sum()) == 3
    assert ids[0, first[0, 2]] == words.unk_id
    assert out["attention_mask"][1].sum() == 3  # [CLS] paris [SEP]
    assert (owner[1, 3:] == -1).all()


def test_truncation_keeps_every_word_addressable(tiny_text: Path) -> None:
    words = WordTokenizer(load_tokenizer(tiny_text), max_length=10)
    out = words([["george"] * 20])
    assert out["input_ids"].shape == (1, 10)
    assert int(out["word_index"].max()) <= 8


def test_word_memo_stays_bounded_and_correct(tiny_text: Path) -> None:
    words = WordTokenizer(load_tokenizer(tiny_text))
    words.max_memo = 5
    expected = {w: words.word_ids(w) for w in ["george", "paris", "in"]}
    for i in range(50):
        words.word_ids(f"word{i}")
        assert len(words._memo) <= 5
    assert {w: words.word_ids(w) for w in expected} == expected


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_word_and_sentence_vectors(tiny_text: Path, pooling: str) -> None:
    tokenizer = load_tokenizer(tiny_text)
    encoder = TextEncoder.from_pretrained(str(tiny_text), word_pooling=pooling)
    encoder.eval()
    batch = WordTokenizer(tokenizer)([["george", "xyzzy"], ["paris"]])
    words, sentence = encoder(**batch)
    assert words.shape == (2, 2, 32) and sentence.shape == (2, 32)
    hidden = encoder.backbone(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    owned = batch["subword_word"][0] == 1
    expected = hidden[0, owned].mean(0) if pooling == "mean" else hidden[0, owned][0]
    assert torch.allclose(words[0, 1], expected, atol=1e-6)
    # padding does not change a post's vectors
    alone, alone_sentence = encoder(**WordTokenizer(tokenizer)([["paris"]]))
    assert torch.allclose(alone[0, 0], words[1, 0], atol=1e-5)
    assert torch.allclose(alone_sentence[0], sentence[1], atol=1e-5)


def test_missing_encoder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SmnerError, match="cannot load text encoder"):
        TextEncoder.from_pretrained(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    ("token", "shape"),
    [
        ("paris", "lower"),
        ("Paris", "title"),
        ("NYC", "upper"),
        ("I", "title"),
        ("McDonald", "mixed"),
        ("2015", "digit"),
        ("@user", "mention"),
        ("#Paris", "hashtag"),
        ("http://t.co/x", "url"),
        (":", "punct"),
        ("\u00a0", "other"),
        ("😀", "punct"),
    ],
)
def test_word_shapes(token: str, shape: str) -> None:
    assert SHAPES[word_shape(token)] == shape


def test_split_zip_assembly(tmp_path: Path) -> None:
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/config.json", "{}")
        zf.writestr("model/weights.bin", bytes(range(256)) * 100)
    data = archive.read_bytes()
    parts = []
    for i, start in enumerate(range(0, len(data), 7000)):
        part = tmp_path / f"whole.zip.{i:03d}"
        part.write_bytes(data[start : start + 7000])
        parts.append(part)
    target = assemble_split_zip(parts, tmp_path / "cache", "model")
    assert (target / "weights.bin").read_bytes() == bytes(range(256)) * 100
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["model"]  # no leftovers
    assert assemble_split_zip([], tmp_path / "cache", "model") == target  # reused
    parts[1].write_bytes(b"garbage")
    with pytest.raises(SmnerError, match="not a valid zip"):
        assemble_split_zip(parts, tmp_path / "other", "model")
    assert list((tmp_path / "other").iterdir()) == []
