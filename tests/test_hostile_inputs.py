"""Hostile inputs are refused or bounded at their mechanism, each in one line, and nothing
else of the input is lost: Parquet bombs, huge posts, broken tokenizers and encoder configs,
malformed card inputs, too many workers, and a Ray cluster that does not answer."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smner.cli import main
from smner.data.posts import MAX_TEXT_CHARS, PostInput, post_words
from smner.data.records import parquet_rows as records_parquet
from smner.data.records.read import ReadOptions, read_records
from smner.errors import SmnerError
from smner.predict.job import FileJob, JsonlEncoder, run_file_job
from smner.predict.predictor import Predictor

# --- a record's size -------------------------------------------------------------------------


def write_row_groups(path: Path, groups: list[list[dict[str, Any]]]) -> Path:
    """One Parquet row group per list of records, zstd-compressed as a bomb would be."""
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for rows in groups:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return path


def predict_file(predictor: Predictor, source: Path, out: Path) -> list[dict[str, Any]]:
    job = FileJob(str(source), "unused", str(out))
    run_file_job(job, JsonlEncoder(), load_predictor=lambda: predictor)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def decoded_groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The Parquet row groups the reader decodes, in order."""
    seen: list[int] = []
    original = records_parquet._decoded_rows

    def spy(table: Any, g: int, group: Any) -> Iterator[Any]:
        seen.append(g)
        return original(table, g, group)

    monkeypatch.setattr(records_parquet, "_decoded_rows", spy)
    return seen


def test_a_parquet_bomb_is_refused_from_its_metadata_and_other_row_groups_are_predicted(
    tiny_predictor: Predictor, tmp_path: Path, decoded_groups: list[int]
) -> None:
    bomb = "a" * (17 * 2**20)  # one word, over the 16 MiB a record may hold
    source = write_row_groups(
        tmp_path / "bomb.parquet",
        [
            [{"id": f"p{i}", "text": "George visited Paris"} for i in range(3)],
            [{"id": "bomb", "text": bomb}],
            [{"id": f"q{i}", "text": "Apple store in New York"} for i in range(2)],
        ],
    )
    assert source.stat().st_size < 64 * 2**10
    records = predict_file(tiny_predictor, source, tmp_path / "out.jsonl")
    assert [r.get("id") for r in records] == ["p0", "p1", "p2", "4", "q0", "q1"]
    assert all("entities" in r for i, r in enumerate(records) if i != 3)
    error = records[3]["error"]
    assert f"{source}: row 4: the row group holds" in error and "uncompressed" in error
    assert "\n" not in error
    assert decoded_groups == [0, 2]  # the bomb's row group was never decoded


def test_a_long_post_in_a_shared_row_group_is_refused_before_it_becomes_python_text(
    tiny_predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = "George " * 10_000  # 70,000 characters, under the bytes of a record
    source = write_row_groups(
        tmp_path / "long.parquet",
        [[{"id": "a", "text": "George visited Paris"}, {"id": "b", "text": long}]],
    )
    lengths: list[int] = []
    original = records_parquet.post_from_record

    def spy(record: dict[str, Any], *args: Any, **kwargs: Any) -> PostInput:
        lengths.append(len(record.get("text") or ""))
        return original(record, *args, **kwargs)

    monkeypatch.setattr(records_parquet, "post_from_record", spy)
    records = predict_file(tiny_predictor, source, tmp_path / "out.jsonl")
    assert "entities" in records[0] and records[1]["id"] == "b"
    assert records[1]["error"] == (
        f"{source}: row 2: the post has {len(long)} characters of text; expected at most "
        f"{MAX_TEXT_CHARS} (split a longer document into several posts)"
    )
    assert max(lengths) < MAX_TEXT_CHARS  # the long text was never converted


def test_a_row_of_millions_of_tokens_is_refused_from_the_value_count(
    tiny_predictor: Predictor, tmp_path: Path, decoded_groups: list[int]
) -> None:
    source = tmp_path / "tokens.parquet"
    schema = pa.schema([("tokens", pa.list_(pa.string()))])
    with pq.ParquetWriter(source, schema, compression="zstd") as writer:
        writer.write_table(pa.table({"tokens": [["George", "visited", "Paris"]]}, schema=schema))
        writer.write_table(pa.table({"tokens": [["a"] * 200_000]}, schema=schema))
    records = predict_file(tiny_predictor, source, tmp_path / "out.jsonl")
    assert "entities" in records[0]
    assert "row 2: the row group holds 200000 values" in records[1]["error"]
    assert decoded_groups == [0]


def test_max_input_mb_bounds_a_parquet_file_by_its_uncompressed_size(tmp_path: Path) -> None:
    source = write_row_groups(tmp_path / "bomb.parquet", [[{"id": "x", "text": "a" * 2**21}]])
    assert source.stat().st_size < 2**20
    with pytest.raises(SmnerError, match=r"holds \d+ bytes uncompressed.*--max-input-mb"):
        list(read_records(str(source), ReadOptions(max_bytes=2**20)))


def test_one_text_bound_is_checked_before_any_split_in_every_input_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smner.data.posts as posts

    def no_split(text: str) -> Any:
        raise AssertionError(f"split a text of {len(text)} characters")

    letters = "a " * 100_000  # 200,000 characters, 100,000 one-letter words
    source = tmp_path / "posts.jsonl"
    source.write_text(json.dumps({"id": "huge", "text": letters}) + "\n", encoding="utf-8")
    monkeypatch.setattr(posts, "tokenize_tweet", no_split)
    (failed,) = list(read_records(str(source), ReadOptions()))
    assert "the post has 200000 characters of text" in failed.error
    for post in (PostInput(text=letters), PostInput(tokens=["a"] * 40_000)):
        with pytest.raises(SmnerError, match="characters of"):
            post_words(post)


# --- model folders ---------------------------------------------------------------------------


@pytest.fixture
def folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def one_line_error(call: Any) -> str:
    with pytest.raises(SmnerError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_a_tokenizer_without_its_vocabulary_is_refused_on_load(folder: Path) -> None:
    from transformers import AutoTokenizer

    from smner.encoders.text import check_tokenizer

    (folder / "tokenizer" / "tokenizer.json").unlink()
    message = one_line_error(lambda: Predictor.from_pretrained(folder))
    assert "the tokenizer has 5 tokens and the encoder's embedding 111 rows" in message
    empty = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))  # loads without a word
    message = one_line_error(lambda: check_tokenizer(empty, None, "tokenizer"))
    assert "maps the words the, a, and to its unknown token" in message


def set_text_encoder(folder: Path, **values: Any) -> None:
    path = folder / "config.json"
    payload = json.loads(path.read_text())
    payload["model"]["text_encoder_config"].update(values)
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"num_hidden_layers": 100_000}, "num_hidden_layers: 100000 is out of range"),
        ({"num_hidden_layers": 3}, "num_hidden_layers: 3 layers, but the weights file holds 1"),
        ({"num_attention_heads": 10**6}, "num_attention_heads: 1000000 is out of range"),
        ({"num_attention_heads": 64}, "64 heads for a hidden size of 32"),
        ({"hidden_size": 10**9}, "hidden_size: 1000000000 is out of range"),
        ({"hidden_size": 64}, "hidden_size: 64, but the weights file's embedding"),
        ({"vocab_size": 2**40}, "vocab_size: 1099511627776 is out of range"),
        ({"vocab_size": 5000}, "vocab_size: 5000, but the weights file's embedding"),
    ],
)
def test_encoder_configs_are_bounded_against_the_weights(
    folder: Path, values: dict[str, Any], expected: str
) -> None:
    set_text_encoder(folder, **values)
    message = one_line_error(lambda: Predictor.from_pretrained(folder))
    assert expected in message and "config.json" in message


def safetensors_header(folder: Path, header: bytes, length: int | None = None) -> None:
    size = len(header) if length is None else length
    (folder / "model.safetensors").write_bytes(size.to_bytes(8, "little") + header)


CARD_BREAKERS = {
    "README not UTF-8": (
        lambda f: (f / "README.md").write_bytes(b"---\nlanguage: \xff\xfe\n---\n"),
        "README.md: not UTF-8 text (byte 14)",
    ),
    "training.json without data": (
        lambda f: (f / "training.json").write_text('{"dev": null}'),
        "training.json: 'data' is missing",
    ),
    "training.json with scores as text": (
        lambda f: (f / "training.json").write_text(
            json.dumps({"data": {}, "dev": {"precision": "high"}})
        ),
        "training.json.dev.precision: expected a whole number or a number, got str",
    ),
    "header length 2**64-1": (
        lambda f: safetensors_header(f, b"{}", 2**64 - 1),
        "a header of 18446744073709551615 bytes",
    ),
    "header a JSON list": (
        lambda f: safetensors_header(f, b"[1, 2]"),
        "its header is not a JSON object",
    ),
    "shape of strings": (
        lambda f: safetensors_header(
            f,
            json.dumps(
                {"w": {"dtype": "F32", "shape": ["a", "b"], "data_offsets": [0, 0]}}
            ).encode(),
        ),
        "tensor 'w' has no shape of whole numbers",
    ),
    "labels not strings": (
        lambda f: (f / "config.json").write_text(
            json.dumps({"format_version": 1, "model": {"labels": [1, 2]}})
        ),
        "config.json: model.labels[0]: expected a string, got int",
    ),
}


@pytest.mark.parametrize("name", sorted(CARD_BREAKERS))
def test_smner_card_turns_each_malformed_input_into_one_line(
    folder: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker, expected = CARD_BREAKERS[name]
    breaker(folder)
    assert main(["card", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("smner: error: "), err
    assert expected in err, err


def test_smner_card_names_a_log_line_that_is_not_an_epoch_record(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = folder.parent / "run"
    shutil.move(folder, run / "best")
    facts = {"data": {"train": None}, "command": "smner train"}
    (run / "best" / "training.json").write_text(json.dumps(facts))
    (run / "log.jsonl").write_text('{"epoch": "one"}\n{"epoch": 2, "dev_f1"')  # torn last line
    assert main(["card", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "log.jsonl: line 1.epoch: expected a whole number, got str" in err


# --- workers ---------------------------------------------------------------------------------


def test_workers_above_the_cpu_count_are_refused_naming_it(tmp_path: Path) -> None:
    from smner.predict.workers import check_worker_count

    cpus = os.cpu_count() or 1
    source = tmp_path / "posts.jsonl"
    source.write_text('{"text": "George"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    job = FileJob(str(source), "unused", str(out), workers=cpus + 1)
    message = one_line_error(lambda: run_file_job(job, JsonlEncoder()))
    assert f"--workers {cpus + 1}: this machine has {cpus} CPUs" in message
    assert f"use at most --workers {cpus}" in message
    assert list(tmp_path.iterdir()) == [source]  # refused before anything was staged
    check_worker_count(2, cpus=2)
    with pytest.raises(SmnerError, match="has 2 CPUs"):
        check_worker_count(500, cpus=2)


def test_workers_that_do_not_fit_in_memory_are_refused_before_they_start() -> None:
    from smner.predict.workers import available_bytes, check_worker_memory, resident_bytes

    mib = 2**20
    check_worker_memory(2, 500 * mib, 1000 * mib)  # three workers: two more fit
    message = one_line_error(lambda: check_worker_memory(3, 500 * mib, 1000 * mib))
    assert "--workers 4: each worker holds 500 MiB" in message
    assert "1500 MiB where 1000 MiB is available" in message
    assert "use at most --workers 3" in message
    check_worker_memory(3, None, 1000 * mib)  # unknown: nothing refused
    if sys.platform.startswith("linux"):
        assert (resident_bytes() or 0) > 0 and (available_bytes() or 0) > 0


@pytest.mark.integration  # starts a worker process
def test_a_pool_measures_its_first_worker_and_starts_no_other_that_would_not_fit(
    tiny_model_dir: Path,
) -> None:
    from smner.predict.workers import WorkerPool, WorkerSpec

    pool = WorkerPool(WorkerSpec(str(tiny_model_dir)), workers=2, available=lambda: 1)
    message = one_line_error(lambda: pool.__enter__())
    assert "--workers 2: each worker holds" in message and "0 MiB is available" in message
    assert pool._processes[1].pid is None  # never started
    assert not pool._processes[0].is_alive()


# --- Ray -------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_ray_address_fails_at_once_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray of this process is running")
    from smner.integrations.ray import RayFileJob, predict_files

    source = tmp_path / "posts.jsonl"
    source.write_text('{"text": "George"}\n', encoding="utf-8")
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    message = one_line_error(lambda: predict_files(RayFileJob(str(source), "unused")))
    assert message.startswith(f"RAY_ADDRESS={address}: cannot reach {address}")
    assert not ray.is_initialized()


@pytest.mark.integration  # a smner process and a listener that never answers
def test_a_ray_address_that_never_answers_fails_within_its_timeout(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    source = tmp_path / "posts.jsonl"
    source.write_text('{"text": "George"}\n', encoding="utf-8")
    env = {**os.environ, "RAY_ADDRESS": address, "SMNER_RAY_CONNECT_TIMEOUT": "2"}
    argv = ["predict", "--model", "unused", "--input", str(source), "--engine", "ray"]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "smner", *argv],
            capture_output=True,
            text=True,
            timeout=15,
            env=env,
            check=False,
        )
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert done.returncode == 1
    expected = f"smner: error: RAY_ADDRESS={address}: no Ray cluster answered within 2 s"
    assert any(line.startswith(expected) for line in done.stderr.splitlines()), done.stderr
