"""pandas: predictions on a real DataFrame, and data files as frames (both directions)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas", reason="the DataFrame tests need smner[pandas]")

import smner  # noqa: E402
from smner.data.conll import format_conll  # noqa: E402
from smner.data.conll import read_conll as read_corpus  # noqa: E402
from smner.data.frames import ENTITY_COLUMNS  # noqa: E402
from smner.errors import MissingExtra, SmnerError  # noqa: E402
from smner.predict.predictor import Predictor  # noqa: E402
from tests.benchmark_fixture import Benchmark  # noqa: E402
from tests.test_serve import POST  # noqa: E402


@pytest.fixture
def frame(post_images: Path) -> pd.DataFrame:
    image = post_images / "0.jpg"
    return pd.DataFrame(
        {
            "text": [POST, "loves New York with George", "the of and", POST],
            "photo": [str(image), None, float("nan"), image.read_bytes()],
            "source": ["a", "b", "c", "d"],
        },
        index=[10, 11, 12, 13],
    )


def test_predict_dataframe_adds_entities_as_in_the_jsonl(
    tiny_predictor: Predictor, frame: pd.DataFrame
) -> None:
    out = tiny_predictor.predict_dataframe(frame, text="text", image="photo")
    assert list(out.columns) == ["text", "photo", "source", "entities", "image_status"]
    assert list(out.index) == [10, 11, 12, 13]
    assert "entities" not in frame.columns  # the input is left alone
    posts = [
        {"text": t, "image": None if p is None or isinstance(p, float) else p}
        for t, p in zip(frame["text"], frame["photo"], strict=True)
    ]
    expected = tiny_predictor.predict_many(posts)
    assert list(out["entities"]) == [p.to_dict()["entities"] for p in expected]
    assert list(out["image_status"]) == ["ok", "no image", "no image", "ok"]

    tokens = pd.DataFrame({"words": [POST.split(), ["loves", "New", "York"]]})
    by_tokens = smner.Predictor.predict_dataframe(tiny_predictor, tokens, tokens="words")
    alone = [m.to_dict() for m in tiny_predictor.predict(POST.split()).entities]
    batched = by_tokens["entities"][0]
    # a batch pads its posts, which may move a score in its sixth decimal
    assert [{**e, "score": None} for e in batched] == [{**e, "score": None} for e in alone]
    assert [e["score"] for e in batched] == pytest.approx([e["score"] for e in alone], abs=1e-4)


def test_explode_gives_one_row_per_entity(tiny_predictor: Predictor, frame: pd.DataFrame) -> None:
    wide = tiny_predictor.predict_dataframe(frame, image="photo")
    long = tiny_predictor.predict_dataframe(frame, image="photo", explode=True)
    total = sum(len(e) for e in wide["entities"])
    assert len(long) == total > 0
    assert list(long.columns) == ["post_text", "photo", "source", "image_status", *ENTITY_COLUMNS]
    assert long["start"].dtype == "int64" and long["score"].dtype == "float64"
    flat = [(i, e["text"], e["type"]) for i, ents in wide["entities"].items() for e in ents]
    assert list(zip(long.index, long["text"], long["type"], strict=True)) == flat
    first = long.iloc[0]
    assert first["post_text"][first["char_start"] : first["char_end"]] == first["text"]
    empty = tiny_predictor.predict_dataframe(frame.iloc[[2]], explode=True)
    assert len(empty) <= len(tiny_predictor.predict("the of and").entities)


def test_bad_frames_are_named(tiny_predictor: Predictor, frame: pd.DataFrame) -> None:
    with pytest.raises(SmnerError, match=r"the text column 'body' is not in the frame \(its"):
        tiny_predictor.predict_dataframe(frame, text="body")
    with pytest.raises(SmnerError, match=r"the image column 'img' is not in the frame"):
        tiny_predictor.predict_dataframe(frame, image="img")
    holes = frame.assign(text=[POST, None, POST, POST])
    with pytest.raises(SmnerError, match=r"row 11: column 'text' is empty"):
        tiny_predictor.predict_dataframe(holes)


def test_read_conll_one_row_per_post_and_write_it_back(tmp_path: Path) -> None:
    text = (
        "IMGID:7\nGeorge\tB-PER\nvisited\tO\nNew\tB-LOC\nYork\tI-LOC\n\n"
        "IMGID:8\nApple\tB-ORG\nstore\tO\n\n"
        "IMGID:9\nnothing\tO\nhere\tO\n\n"
    )
    path = tmp_path / "train.txt"
    path.write_text(text, encoding="utf-8")
    posts = smner.read_conll(path)
    assert list(posts.columns) == ["id", "image_id", "tokens", "tags", "entities", "line"]
    assert list(posts["id"]) == ["7", "8", "9"] and list(posts["line"]) == [1, 7, 11]
    assert posts["entities"][0] == [
        {"text": "George", "type": "PER", "start": 0, "end": 1},
        {"text": "New York", "type": "LOC", "start": 2, "end": 4},
    ]
    out = tmp_path / "out.txt"
    smner.write_conll(posts, out)
    assert out.read_text(encoding="utf-8") == text  # byte for byte

    with_entities = posts[posts["entities"].map(len) > 0].drop(columns=["tags"])
    smner.write_conll(with_entities, out)
    again = read_corpus(out)
    assert [ex.image_id for ex in again] == ["7", "8"]
    assert [ex.tags for ex in again] == [list(t) for t in posts["tags"][:2]]

    plain = pd.DataFrame({"tokens": [["a", "b"]]})
    smner.write_conll(plain, out)
    assert out.read_text(encoding="utf-8") == "a\tO\nb\tO\n\n"
    with pytest.raises(SmnerError, match=r"row 0: 1 tags for 2 tokens"):
        smner.write_conll(plain.assign(tags=[["O"]]), out)


def test_read_conll_on_the_benchmark(benchmark_data: Benchmark, tmp_path: Path) -> None:
    path = benchmark_data.root / "twitter2017" / "valid.txt"
    posts = smner.read_conll(path)
    corpus = read_corpus(path)
    assert len(posts) == len(corpus)
    assert posts["entities"].map(len).sum() == sum(len(ex.entities) for ex in corpus)
    persons = posts[posts["entities"].map(lambda es: any(e["type"] == "PER" for e in es))]
    assert 0 < len(persons) < len(posts)
    smner.write_conll(posts, tmp_path / "valid.txt")
    assert (tmp_path / "valid.txt").read_text(encoding="utf-8") == format_conll(corpus.examples)


def test_without_pandas_the_message_says_what_to_install(
    tiny_predictor: Predictor, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtra, match=r"needs pandas.*pip install 'smner\[pandas\]'"):
        smner.read_conll("whatever.txt")
    with pytest.raises(ImportError, match=r"smner\[pandas\]"):
        tiny_predictor.predict_dataframe(frame)
