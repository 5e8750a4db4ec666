"""A fuzz pass over the record readers and the resume path: random bytes and odd but valid
records never crash or hang the run, and every input record (a JSONL line, a Parquet row)
comes out as a prediction or an error record, once, in input order."""

from __future__ import annotations

import contextlib
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from smner.data.records.write import partial_path
from smner.errors import SmnerError
from smner.predict.job import FileJob, JsonlEncoder, run_file_job
from smner.predict.predictor import Predictor

FUZZ = settings(
    max_examples=20,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

WORDS = ["George", "Paris", "Apple", "visited", "#NYC", "@user", "é", "🙂", "\u00a0", "\t"]
odd_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join),
    st.sampled_from(["", " ", "\ud800", "a" * 300, "x " * 250]),
)
odd_id = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=8), st.floats())


@st.composite
def odd_record(draw: Any) -> Any:
    """A JSON value as a JSONL line may hold it: mostly post records, some odd in every way."""
    record: dict[str, Any] = {}
    if draw(st.booleans()):
        record["text"] = draw(odd_text)
    else:
        record["tokens"] = draw(st.lists(st.one_of(odd_text, st.integers()), max_size=8))
    if draw(st.booleans()):
        record["id"] = draw(odd_id)
    if draw(st.booleans()):
        record["image"] = draw(st.sampled_from(["", "missing.jpg", "../x.png", 3, None]))
    if draw(st.booleans()):
        record["extra"] = draw(st.recursive(st.none() | st.integers(), st.lists, max_leaves=5))
    return draw(st.one_of(st.just(record), st.just(record), st.integers(), st.lists(st.none())))


def records_of(path: Path) -> int:
    """The records a JSONL input holds, as the reader counts them (non-blank lines)."""
    lines = path.read_bytes().split(b"\n")
    return sum(1 for line in lines if line.strip())


def outputs(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().split(b"\n")  # str.splitlines would also split at U+0085
    records = [json.loads(line) for line in lines if line]
    assert all(("entities" in r) != ("error" in r) for r in records), records
    return records


def rounded(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with scores to 5 places (batches of other lengths move the 8th)."""
    return [
        {**r, "entities": [{**e, "score": round(e["score"], 5)} for e in r["entities"]]}
        if "entities" in r
        else r
        for r in records
    ]


def run(predictor: Any, source: Path, out: Path, window: int = 3, resume: bool = False) -> Any:
    job = FileJob(str(source), "unused", str(out), window=window, resume=resume)
    return run_file_job(job, JsonlEncoder(), load_predictor=lambda: predictor)


@pytest.fixture
def folder(tmp_path: Path) -> Any:
    """A new empty folder for each example (``tmp_path`` is shared by the examples)."""

    def make() -> Path:
        return Path(tempfile.mkdtemp(dir=tmp_path))

    return make


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes_as_jsonl_come_out_one_record_per_line(
    tiny_predictor: Predictor, folder: Any, data: bytes
) -> None:
    root = folder()
    source = root / "in.jsonl"
    source.write_bytes(data)
    run(tiny_predictor, source, root / "out.jsonl")
    assert len(outputs(root / "out.jsonl")) == records_of(source)


@FUZZ
@given(records=st.lists(odd_record(), max_size=12), ascii_only=st.booleans())
def test_odd_jsonl_records_come_out_one_each_in_order(
    tiny_predictor: Predictor, folder: Any, records: list[Any], ascii_only: bool
) -> None:
    root = folder()
    source = root / "in.jsonl"
    lines = [json.dumps(r, ensure_ascii=ascii_only) for r in records]
    source.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8", "surrogatepass"))
    run(tiny_predictor, source, root / "out.jsonl")
    got = outputs(root / "out.jsonl")
    assert len(got) == len(records)
    for record, out in zip(records, got, strict=True):
        if isinstance(record, dict) and "id" in record and isinstance(record["id"], str):
            assert out.get("id") == record["id"]


parquet_row = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), st.text(max_size=6)),
        "text": st.one_of(st.none(), odd_text.filter(lambda t: "\ud800" not in t)),
        "tokens": st.one_of(st.none(), st.lists(st.sampled_from(WORDS), max_size=6)),
    }
)


def write_parquet(path: Path, rows: list[dict[str, Any]], group: int) -> None:
    schema = pa.schema(
        [("id", pa.string()), ("text", pa.string()), ("tokens", pa.list_(pa.string()))]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=group)


@FUZZ
@given(rows=st.lists(parquet_row, max_size=12), group=st.integers(1, 5))
def test_odd_parquet_rows_come_out_one_each_in_order(
    tiny_predictor: Predictor, folder: Any, rows: list[dict[str, Any]], group: int
) -> None:
    root = folder()
    source = root / "in.parquet"
    write_parquet(source, rows, group)
    run(tiny_predictor, source, root / "out.jsonl")
    got = outputs(root / "out.jsonl")
    assert len(got) == len(rows)
    for row, out in zip(rows, got, strict=True):
        if row["id"] is not None:
            assert out.get("id") == row["id"]


@FUZZ
@given(
    rows=st.lists(parquet_row, min_size=1, max_size=8),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=4),
    noise=st.binary(max_size=200),
)
def test_damaged_parquet_is_one_line_or_one_record_per_row(
    tiny_predictor: Predictor,
    folder: Any,
    rows: list[dict[str, Any]],
    cut: float,
    flips: list[tuple[float, int]],
    noise: bytes,
) -> None:
    root = folder()
    source = root / "in.parquet"
    write_parquet(source, rows, 2)
    data = bytearray(source.read_bytes())
    for where, mask in flips:
        data[int(where * (len(data) - 1))] ^= mask
    if cut < 0.2:
        data = data[: int(cut * 5 * len(data))]
    elif cut > 0.9:
        data = bytearray(noise)
    source.write_bytes(bytes(data))
    try:
        declared = pq.ParquetFile(source).metadata.num_rows
    except Exception:
        declared = None
    try:
        run(tiny_predictor, source, root / "out.jsonl")
    except SmnerError as exc:
        event("refused whole")
        assert "\n" not in str(exc) and str(source) in str(exc)
        return
    got = outputs(root / "out.jsonl")
    event(f"{sum('error' in r for r in got)} of {len(got)} error records")
    assert len(got) == declared


class Interrupted(Exception):
    """Stands for a kill after some windows are written."""


class StopsAfter:
    def __init__(self, predictor: Predictor, windows: int) -> None:
        self.predictor, self.left = predictor, windows

    def predict_stream(self, window: list[Any], *args: Any, **kwargs: Any) -> Any:
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return self.predictor.predict_stream(window, *args, **kwargs)


@settings(FUZZ, max_examples=10)
@given(
    rows=st.lists(parquet_row, min_size=3, max_size=10),
    parquet=st.booleans(),
    window=st.integers(1, 3),
    stop=st.integers(0, 2),
    tail=st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    garbage=st.one_of(st.none(), st.binary(min_size=1, max_size=20)),
)
def test_a_stopped_run_resumes_to_the_whole_output_or_is_refused_in_one_line(
    tiny_predictor: Predictor,
    folder: Any,
    rows: list[dict[str, Any]],
    parquet: bool,
    window: int,
    stop: int,
    tail: bytes,
    garbage: bytes | None,
) -> None:
    root = folder()
    if parquet:
        source = root / "in.parquet"
        write_parquet(source, rows, 3)
    else:
        source = root / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    reference = root / "reference.jsonl"
    run(tiny_predictor, source, reference, window)
    out = root / "out.jsonl"
    with contextlib.suppress(Interrupted):
        run(StopsAfter(tiny_predictor, stop), source, out, window)
    partial = partial_path(out)
    staged = partial.exists()
    if staged:
        with open(partial, "ab") as handle:
            if garbage is not None:
                handle.write(garbage.replace(b"\n", b" ") + b"\n")
            handle.write(tail)  # a line torn by the kill
    try:
        run(tiny_predictor, source, out, window, resume=True)
    except SmnerError as exc:
        event("refused")
        assert garbage is not None and "\n" not in str(exc), exc
        assert "is not a JSON record" in str(exc)
        return
    event("resumed" if staged else "nothing staged")
    assert rounded(outputs(out)) == rounded(outputs(reference))
    assert not partial.exists()
