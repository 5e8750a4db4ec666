from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smner.data.conll import (
    format_conll,
    parse_conll,
    read_conll,
    write_conll,
    write_predictions,
)
from smner.data.types import Entity
from smner.errors import DataFormatError
from tests.benchmark_fixture import Benchmark

SAMPLE = (
    "IMGID:17\nRT\tO\n@user\tO\nGeorge\tB-PER\nZimmerman\tI-PER\nin\tO\nFlorida\tB-LOC\n\n"
    "IMGID:18\nApple\tI-ORG\nstore\tO\n"
)


def test_reads_posts_tokens_image_ids_and_entities() -> None:
    corpus = parse_conll(SAMPLE)
    assert [ex.image_id for ex in corpus] == ["17", "18"]
    assert [ex.post_id for ex in corpus] == ["17", "18"]
    first, second = corpus.examples
    assert first.tokens == ["RT", "@user", "George", "Zimmerman", "in", "Florida"]
    assert first.entities == [Entity(2, 4, "PER"), Entity(5, 6, "LOC")]
    assert first.line == 1 and second.line == 9
    # an entity that starts with I- is an entity start, as in seqeval and conlleval
    assert second.entities == [Entity(0, 1, "ORG")]
    assert corpus.final_blank_line is False


def test_plain_two_column_conll_without_image_ids() -> None:
    corpus = parse_conll("EU B-ORG\nrejects O\n\nPeter B-PER\n")
    assert [ex.image_id for ex in corpus] == [None, None]
    assert [ex.post_id for ex in corpus] == ["1", "2"]
    assert corpus.examples[1].entities == [Entity(0, 1, "PER")]


def test_crlf_and_trailing_whitespace_are_accepted() -> None:
    crlf = SAMPLE.replace("\n", "\r\n").replace("B-LOC", "B-LOC  \t")
    a, b = parse_conll(crlf), parse_conll(SAMPLE)
    assert [(ex.tokens, ex.entities) for ex in a] == [(ex.tokens, ex.entities) for ex in b]


def test_tokens_are_kept_verbatim() -> None:
    corpus = parse_conll('IMGID:1\n\u00a0\tO\nx"\tO\n')
    assert corpus.examples[0].tokens == ["\u00a0", 'x"']


def test_aliases_rename_entity_types_but_keep_file_tags() -> None:
    corpus = parse_conll("IMGID:1\nFoo\tB-OTHER\n", aliases={"OTHER": "MISC"})
    assert corpus.examples[0].entities == [Entity(0, 1, "MISC")]
    assert corpus.examples[0].tags == ["B-OTHER"]


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("IMGID:1\nfoo\tO\nbar\n", 3, "a token without a tag"),
        ("IMGID:1\nfoo\tB-PER\tx\n", 2, "3 columns"),
        ("IMGID:1\nfoo\tX-PER\n", 2, "invalid tag 'X-PER'"),
        ("IMGID:1\nfoo\tB-\n", 2, "invalid tag 'B-'"),
        ("IMGID:1\nfoo\tO\n\nIMGID:2\n\nIMGID:3\nx\tO\n", 4, "post has no tokens"),
        ("IMGID:1\nfoo\tO\n\nIMGID:2\n", 4, "post has no tokens"),
        ("IMGID:\nfoo\tO\n", 1, "empty image id"),
        ("IMGID:1\nfoo\tO\n\nIMGID:../x\nbar\tO\n", 4, "unsafe image id '../x'"),
        ("IMGID:a\\b\nfoo\tO\n", 1, "path separator"),
        ("IMGID:a\x00b\nfoo\tO\n", 1, "NUL byte"),
        ("IMGID:..\nfoo\tO\n", 1, "names a folder"),
        ("IMGID:.\nfoo\tO\n", 1, "names a folder"),
    ],
)
def test_broken_input_names_file_line_and_expectation(text: str, line: int, expected: str) -> None:
    with pytest.raises(DataFormatError) as info:
        parse_conll(text, "posts.txt")
    assert info.value.line == line
    assert expected in str(info.value)
    assert str(info.value).startswith(f"posts.txt:{line}: ")


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"IMGID:1\nok\tO\ncaf\xe9\tO\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:3: invalid UTF-8"):
        read_conll(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="file not found"):
        read_conll(tmp_path / "absent.txt")


@pytest.mark.parametrize("final_blank", [True, False])
def test_round_trip_is_byte_identical(tmp_path: Path, final_blank: bool) -> None:
    text = SAMPLE + ("\n" if final_blank else "")
    source = tmp_path / "in.txt"
    source.write_text(text, encoding="utf-8")
    corpus = read_conll(source)
    assert corpus.final_blank_line is final_blank
    write_conll(tmp_path / "out.txt", corpus)
    assert (tmp_path / "out.txt").read_bytes() == source.read_bytes()


def test_benchmark_files_round_trip_byte_for_byte(benchmark_data: Benchmark) -> None:
    """With and without a final blank line (Twitter-2015's files have none)."""
    files = benchmark_data.files()
    assert len(files) == 5
    for path in files:
        corpus = read_conll(path)
        text = format_conll(corpus.examples, final_blank_line=corpus.final_blank_line)
        assert text.encode("utf-8") == path.read_bytes(), path


def test_prediction_file_has_gold_tokens_and_predicted_tags(tmp_path: Path) -> None:
    corpus = parse_conll(SAMPLE)
    predictions = [[Entity(5, 6, "ORG")], [Entity(0, 2, "LOC")]]
    write_predictions(tmp_path / "pred.txt", corpus.examples, predictions)
    back = read_conll(tmp_path / "pred.txt")
    assert [ex.tokens for ex in back] == [ex.tokens for ex in corpus]
    assert [ex.image_id for ex in back] == ["17", "18"]
    assert [ex.entities for ex in back] == predictions


def test_prediction_file_uses_the_file_own_labels_under_aliases(tmp_path: Path) -> None:
    corpus = parse_conll("IMGID:1\nFoo\tB-OTHER\nBar\tB-PER\n", aliases={"OTHER": "MISC"})
    predictions = [[Entity(0, 1, "MISC"), Entity(1, 2, "PER")]]
    write_predictions(tmp_path / "pred.txt", corpus.examples, predictions, corpus.aliases)
    assert (tmp_path / "pred.txt").read_text() == "IMGID:1\nFoo\tB-OTHER\nBar\tB-PER\n\n"


@pytest.mark.parametrize(
    ("text", "aliases"),
    [
        ("IMGID:1\nFoo\tB-OTHER\nBar\tB-MISC\n", {"OTHER": "MISC"}),  # MISC is used as is
        ("IMGID:1\nFoo\tB-OTHER\nBar\tB-MISCS\n", {"OTHER": "MISC", "MISCS": "MISC"}),
    ],
)
def test_ambiguous_aliases_keep_the_predicted_label(
    tmp_path: Path, text: str, aliases: dict[str, str]
) -> None:
    corpus = parse_conll(text, aliases=aliases)
    write_predictions(tmp_path / "p.txt", corpus.examples, [[Entity(0, 1, "MISC")]], aliases)
    assert read_conll(tmp_path / "p.txt").examples[0].tags == ["B-MISC", "O"]


def test_a_model_that_predicts_an_alias_source_keeps_its_labels(tmp_path: Path) -> None:
    """A model trained without the alias predicts OTHER itself: writing its MISC as OTHER too
    would turn a wrong type into a right one."""
    corpus = parse_conll("IMGID:1\nFoo\tB-OTHER\nBar\tB-OTHER\n", aliases={"OTHER": "MISC"})
    predictions = [[Entity(0, 1, "MISC"), Entity(1, 2, "OTHER")]]
    write_predictions(tmp_path / "p.txt", corpus.examples, predictions, corpus.aliases)
    assert read_conll(tmp_path / "p.txt").examples[0].tags == ["B-MISC", "B-OTHER"]


# --- fuzzing: any input ends in a corpus or the project's own error, nothing else -------------

_LINE = st.one_of(
    st.just(""),
    st.builds(lambda i: f"IMGID:{i}", st.integers(0, 99)),
    st.builds(
        lambda tok, tag: f"{tok}\t{tag}",
        st.text(min_size=0, max_size=4),
        st.sampled_from(["O", "B-PER", "I-LOC", "B-", "X", "", "I-ORG x"]),
    ),
    st.text(max_size=8),
)


def _parse_or_error(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        corpus = parse_conll(text, "fuzz.txt")
    except DataFormatError as exc:
        assert exc.path == "fuzz.txt"
        return
    for ex in corpus:
        assert ex.tokens and ex.tags is not None and len(ex.tags) == len(ex.tokens)
        for e in ex.entities:
            assert 0 <= e.start < e.end <= len(ex.tokens)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=30))
def test_fuzz_structured_lines(lines: list[str]) -> None:
    _parse_or_error("\n".join(lines).encode("utf-8"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(DataFormatError, UnicodeDecodeError):
        parse_conll(data.decode("utf-8", errors="strict"), "fuzz.txt")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_fuzz_mutations_of_a_valid_file(
    tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    rng = random.Random(seed)
    data = bytearray(SAMPLE.encode("utf-8"))
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(3)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[min(pos, len(data) - 1)]
        elif op == 1:
            data.insert(pos, rng.choice(b"\t\n\r -BIOX:\xe9\xff"))
        elif data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.txt"
    path.write_bytes(bytes(data))
    try:
        read_conll(path)
    except DataFormatError as exc:
        assert exc.path == str(path)
