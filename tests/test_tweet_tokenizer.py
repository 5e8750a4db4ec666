from __future__ import annotations

import pytest

from smner.data.conll import read_conll
from smner.data.tweet_tokenizer import tokenize_tweet
from tests.benchmark_fixture import Benchmark


def texts(raw: str) -> list[str]:
    return [t.text for t in tokenize_tweet(raw)]


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        (
            "RT @JayKenMinaj_ : Me outside of where George Zimmerman got shot http://t.co/Z3neVBQ7vF",
            [
                "RT",
                "@JayKenMinaj_",
                ":",
                "Me",
                "outside",
                "of",
                "where",
                "George",
                "Zimmerman",
                "got",
                "shot",
                "http://t.co/Z3neVBQ7vF",
            ],
        ),
        ("I don't like #NewYork :)", ["I", "don", "'", "t", "like", "#NewYork", ":)"]),
        (
            "Go USA 🇺🇸👍🏽!! 10:30, 1st...",
            ["Go", "USA", "🇺🇸", "👍🏽", "!", "!", "10:30", ",", "1st", "..."],
        ),
        ("Q&amp;A with state-of-the-art", ["Q", "&amp;", "A", "with", "state-of-the-art"]),
        ("", []),
    ],
)
def test_tweet_conventions(raw: str, tokens: list[str]) -> None:
    assert texts(raw) == tokens


def test_offsets_point_into_the_raw_text() -> None:
    raw = "  Émile  visited\tMontréal 👍🏽 "
    for token in tokenize_tweet(raw):
        assert raw[token.start : token.end] == token.text


def test_reproduces_the_benchmark_tokenisation(benchmark_data: Benchmark) -> None:
    """Re-tokenising the joined tokens of benchmark posts gives back the same tokens."""
    for name, floor in [("twitter2017", 0.98), ("twitter2015", 0.90)]:
        corpus = read_conll(benchmark_data.root / name / "train.txt")
        same = sum(texts(" ".join(ex.tokens)) == ex.tokens for ex in corpus)
        assert same / len(corpus) >= floor, name
