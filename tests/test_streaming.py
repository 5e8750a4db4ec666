"""Prediction at scale: streams in bounded windows, input order, bad records kept in place,
Parquet, standard input and output, and runs that are killed and resumed."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smner.cli import main
from smner.data.predictions import FailedPost, PostPrediction
from smner.errors import SmnerError
from smner.predict.predictor import Predictor

WORDS = ["George", "visited", "Paris", "today", "with", "New", "York", "and", "Apple"]


def post_text(i: int) -> str:
    """Posts of 1 to 9 words, so that sorting by length reorders every window."""
    return " ".join(WORDS[: 1 + (i * 5) % len(WORDS)])


def write_posts(path: Path, count: int, image: Path | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for i in range(count):
        record: dict[str, Any] = {"id": f"p{i}", "text": post_text(i)}
        if image is not None and i % 3 == 0:
            record["image"] = str(image)
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


def entity_view(result: Any) -> list[tuple[str, str, int, int, float]]:
    """Entities with scores to 5 places: posts batched with others of another length see
    other padding, which moves scores in the 8th place."""
    return [(m.text, m.type, m.start, m.end, round(m.score, 5)) for m in result.entities]


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    """A JSONL output record, its scores to 5 places (see entity_view)."""
    entities = [{**e, "score": round(e["score"], 5)} for e in record.get("entities", [])]
    return {**record, "entities": entities} if "entities" in record else record


def smner(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smner", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        **kwargs,
    )


# --- the Python API ----------------------------------------------------------------------


def test_predict_stream_reads_a_generator_a_window_at_a_time_in_input_order(
    tiny_predictor: Predictor,
) -> None:
    pulled: list[int] = []

    def posts() -> Iterator[str]:
        for i in range(23):
            pulled.append(i)
            yield post_text(i)

    stream = tiny_predictor.predict_stream(posts(), batch_size=2, window=5)
    first = next(stream)
    assert len(pulled) == 5  # one window read, not the input
    results = [first, *stream]
    expected = tiny_predictor.predict_many([post_text(i) for i in range(23)], batch_size=2)
    assert [r.tokens for r in results] == [r.tokens for r in expected]
    assert [entity_view(r) for r in results] == [entity_view(r) for r in expected]
    assert tiny_predictor.predict_many(post_text(i) for i in range(3))  # any iterable


def test_predict_stream_sorts_by_length_inside_each_window_only(
    tiny_predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[int]] = []
    original = tiny_predictor._predict_batch

    def spy(posts: list[Any]) -> list[PostPrediction]:
        batches.append([len(p.text.split()) for p in posts])
        return original(posts)

    monkeypatch.setattr(tiny_predictor, "_predict_batch", spy)
    texts = [post_text(i) for i in range(6)]  # 1, 6, 2, 7, 3, 8 words
    list(tiny_predictor.predict_stream(texts, batch_size=2, window=3))
    assert batches == [[1, 2], [6], [3, 7], [8]]


def test_posts_the_model_cannot_take_keep_their_place_with_an_error(
    tiny_predictor: Predictor,
) -> None:
    posts = ["George visited Paris", 3.5, "", {"id": "x", "text": "w " * 201}, ["New", "York"]]
    results = list(tiny_predictor.predict_stream(posts, window=2, errors="record"))
    assert [type(r).__name__ for r in results] == [
        "PostPrediction",
        "FailedPost",
        "FailedPost",
        "FailedPost",
        "PostPrediction",
    ]
    assert results[1].error.startswith("post 1: expected a string")
    assert results[2].error == "post 2: the post has no tokens; expected non-empty text or tokens"
    assert results[3].to_dict() == {
        "id": "x",
        "text": "w " * 201,
        "error": "post 3: the post has 201 tokens; expected at most 200",
    }
    with pytest.raises(SmnerError, match="post 0: the post has no tokens"):
        list(tiny_predictor.predict_stream(posts[2:], window=2))


def test_a_failing_batch_loses_only_the_post_that_fails_alone(
    tiny_predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = tiny_predictor._predict_batch

    def fragile(posts: list[Any]) -> list[PostPrediction]:
        if any(p.text == "Apple" for p in posts):
            raise RuntimeError("the encoder choked")
        return original(posts)

    monkeypatch.setattr(tiny_predictor, "_predict_batch", fragile)
    posts = ["George", "Apple", "Paris"]
    results = list(tiny_predictor.predict_stream(posts, batch_size=3, errors="record"))
    assert isinstance(results[1], FailedPost)
    assert results[1].error == "RuntimeError: the encoder choked"
    assert [r.tokens for r in (results[0], results[2])] == [["George"], ["Paris"]]
    with pytest.raises(RuntimeError):
        list(tiny_predictor.predict_stream(posts, batch_size=3))


# --- files, standard input and output ----------------------------------------------------


def test_jsonl_output_is_the_same_whatever_the_window(
    tiny_model_dir: Path, tiny_predictor: Predictor, post_images: Path, tmp_path: Path
) -> None:
    source = tmp_path / "posts.jsonl"
    records = write_posts(source, 30, image=post_images / "0.jpg")
    outputs = []
    for window in ("1", "7", "1000"):
        out = tmp_path / f"out-{window}.jsonl"
        argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source)]
        assert main([*argv, "--output", str(out), "--window", window, "--batch-size", "4"]) == 0
        outputs.append(out.read_text(encoding="utf-8"))
        assert not (tmp_path / f"out-{window}.jsonl.partial").exists()
    views = [[record_view(json.loads(line)) for line in out.splitlines()] for out in outputs]
    assert views[0] == views[1] == views[2]
    expected = [
        record_view(p.to_dict()) for p in tiny_predictor.predict_many(records, batch_size=4)
    ]
    assert views[0] == expected


@pytest.mark.integration  # a smner process
def test_stdin_to_stdout_writes_each_window_before_the_input_ends(
    tiny_model_dir: Path,
) -> None:
    command = ["predict", "--model", str(tiny_model_dir), "--input", "-", "--output", "-"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "smner", *command, "--window", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for i in range(3):  # a full window and one more post; stdin stays open
            proc.stdin.write((json.dumps({"id": i, "text": post_text(i)}) + "\n").encode())
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "nothing came out while the input was still open"
        first = json.loads(proc.stdout.readline())
        assert first["id"] == 0 and first["tokens"] == ["George"]
        assert proc.poll() is None  # still waiting for more input
        proc.stdin.write(b'{"id": 3, "text": "Paris"}\n')
        proc.stdin.close()
        rest = [json.loads(line) for line in proc.stdout.read().splitlines()]
        assert [r["id"] for r in rest] == [1, 2, 3]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.mark.integration  # a smner process
def test_a_closed_stdout_stops_the_run_quietly(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "posts.jsonl"
    write_posts(source, 40)
    command = (
        f"set -o pipefail; {sys.executable} -m smner predict --model {tiny_model_dir} "
        f"--input - --window 4 < {source} | head -n 1"
    )
    proc = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert json.loads(proc.stdout)["id"] == "p0"
    assert proc.stderr == ""
    assert proc.returncode == 141


@pytest.mark.integration  # a smner process
def test_strict_stdin_is_checked_whole_before_any_prediction(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    good = "".join(json.dumps({"text": post_text(i)}) + "\n" for i in range(3))
    argv = ["predict", "--model", str(tiny_model_dir), "--input", "-", "--strict"]
    proc = smner(*argv, input=good + '{"text": ""}\n')
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "smner: error: <stdin>:4: the post has no tokens; expected non-empty text or tokens"
    )
    proc = smner(*argv, input=good)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3


def test_an_overlong_line_is_a_bad_record_not_a_memory_blowup(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smner.data.records.read

    monkeypatch.setattr(smner.data.records.read, "MAX_RECORD_BYTES", 64)
    source = tmp_path / "posts.jsonl"
    long = json.dumps({"id": "long", "text": "George " * 30})
    source.write_text(f'{{"text": "Paris"}}\n\n{long}\n{{"text": "York"}}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source), "--output", str(out)]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("tokens") for r in records] == [["Paris"], None, ["York"]]
    assert records[1] == {"id": "3", "error": f"{source}:3: the line is longer than 64 bytes"}


# --- Parquet -----------------------------------------------------------------------------


def test_parquet_in_and_out_match_jsonl(
    tiny_model_dir: Path, post_images: Path, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    jsonl = tmp_path / "posts.jsonl"
    records = write_posts(jsonl, 12, image=post_images / "0.jpg")
    records[4] = {"id": "p4", "text": ""}  # a post the model cannot take
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    table = pa.Table.from_pylist(records)
    pq.write_table(table, tmp_path / "posts.parquet", row_group_size=5)

    argv = ["predict", "--model", str(tiny_model_dir), "--window", "5"]
    assert main([*argv, "--input", str(jsonl), "--output", str(tmp_path / "a.jsonl")]) == 0
    expected = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert expected[4]["error"].endswith(
        "the post has no tokens; expected non-empty text or tokens"
    )

    assert main([*argv, "--input", str(jsonl), "--output", str(tmp_path / "a.parquet")]) == 0
    rows = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert [{k: v for k, v in row.items() if v is not None} for row in rows] == expected

    parquet = str(tmp_path / "posts.parquet")
    assert main([*argv, "--input", parquet, "--output", str(tmp_path / "b.jsonl")]) == 0
    from_parquet = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r.get("entities") for r in from_parquet] == [r.get("entities") for r in expected]
    assert [r["id"] for r in from_parquet] == [r["id"] for r in records]
    assert from_parquet[4]["error"] == (
        f"{parquet}: row 5: the post has no tokens; expected non-empty text or tokens"
    )


def test_parquet_without_pyarrow_names_the_extra(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    source = tmp_path / "posts.jsonl"
    write_posts(source, 2)
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source)]
    assert main([*argv, "--output", str(tmp_path / "out.parquet")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "smner: error: reading and writing Parquet files needs pyarrow, an optional "
        "dependency of smner: pip install 'smner[parquet]'"
    )
    assert not (tmp_path / "out.parquet.partial").exists()


# --- resuming ----------------------------------------------------------------------------


def test_resume_cuts_a_torn_line_and_redoes_nothing(
    tiny_model_dir: Path, tiny_predictor: Predictor, tmp_path: Path, capsys: Any
) -> None:
    from smner.predict.job import FileJob, JsonlEncoder, run_file_job

    source = tmp_path / "posts.jsonl"
    write_posts(source, 20)
    reference = tmp_path / "reference.jsonl"
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source), "--window", "3"]
    assert main([*argv, "--output", str(reference)]) == 0
    lines = reference.read_bytes().splitlines(keepends=True)

    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    windows = iter([1, 2])

    class KilledAfterTwoWindows:
        def predict_stream(self, window: Any, *args: Any, **kwargs: Any) -> Any:
            if next(windows, None) is None:
                raise KeyboardInterrupt
            return tiny_predictor.predict_stream(window, *args, **kwargs)

    job = FileJob(str(source), str(tiny_model_dir), str(out), window=3)
    with pytest.raises(KeyboardInterrupt):
        run_file_job(job, JsonlEncoder(), load_predictor=KilledAfterTwoWindows)
    with open(partial, "ab") as handle:
        handle.write(lines[6][:25])  # what a kill mid-write leaves
    capsys.readouterr()
    assert main([*argv, "--output", str(out)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"smner: error: {partial} holds 6 records of an unfinished run: continue it with "
        "--resume, or delete it to start again"
    )
    assert main([*argv, "--output", str(out), "--resume"]) == 0
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists()
    assert "resumed after the 6 records" in capsys.readouterr().err
    assert main([*argv, "--output", str(out), "--resume"]) == 0
    assert "is complete; nothing to resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 1
    assert "--resume needs an output file, and - is standard output" in capsys.readouterr().err


@pytest.mark.integration  # a smner predict process, killed mid-file, then resumed
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_mid_file_resumes_without_duplicates(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "posts.jsonl"
    write_posts(source, 600)
    reference = tmp_path / "reference.jsonl"
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source), "--window", "2"]
    assert main([*argv, "--output", str(reference)]) == 0

    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smner", *argv, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file() and partial.stat().st_size > 2000:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = partial.read_bytes().count(b"\n")
    assert 0 < done < 600

    resumed = smner(*argv, "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference.read_bytes()


def test_a_progress_bar_counts_posts_and_their_rate(
    tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    from smner.predict.job import FileJob, JsonlEncoder, run_file_job

    source = tmp_path / "posts.jsonl"
    write_posts(source, 12)
    job = FileJob(str(source), str(tiny_model_dir), str(tmp_path / "out.jsonl"), progress=True)
    report = run_file_job(job, JsonlEncoder())
    assert report.written == 12 and report.failed == 0
    err = capsys.readouterr().err
    assert "12post" in err.replace(" ", "") and "post/s" in err


def test_the_input_size_limit_still_applies_when_asked(
    tiny_model_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text(json.dumps({"text": "George"}) + "\n" * 2**20, encoding="utf-8")
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source)]
    assert main([*argv, "--max-input-mb", "1"]) == 1
    err = capsys.readouterr().err
    assert "larger than the limit of 1048576 bytes" in err and "--max-input-mb" in err
