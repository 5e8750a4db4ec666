"""A staging file is resumed only with the input it was made from, and only when it is a
regular file holding records: every other case is one line saying what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from smner.data.records.write import fingerprint_path, partial_path
from smner.errors import SmnerError
from smner.predict.job import FileJob, JobReport, JsonlEncoder, run_file_job
from smner.predict.predictor import Predictor


class Interrupted(Exception):
    """Stands for a kill after some windows are written (the staging file stays)."""


class StopsAfter:
    """A predictor that predicts ``windows`` windows and then stops the run."""

    def __init__(self, predictor: Predictor, windows: int) -> None:
        self.predictor = predictor
        self.left = windows

    def predict_stream(self, window: list[Any], *args: Any, **kwargs: Any) -> Any:
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return self.predictor.predict_stream(window, *args, **kwargs)


def write_input(path: Path, count: int, start: int = 0) -> Path:
    """Records without ids: only their content tells one input from another."""
    lines = [json.dumps({"text": f"George visited Paris on day {i}"}) for i in range(start, count)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def run(predictor: Any, source: Path, out: Path, resume: bool = False) -> JobReport:
    job = FileJob(str(source), "unused", str(out), window=2, resume=resume)
    return run_file_job(job, JsonlEncoder(), load_predictor=lambda: predictor)


def interrupted(predictor: Predictor, source: Path, out: Path, windows: int = 2) -> None:
    """Leave ``out``'s staging file as a run stopped after ``windows`` windows leaves it."""
    with pytest.raises(Interrupted):
        run(StopsAfter(predictor, windows), source, out)
    assert partial_path(out).is_file() and fingerprint_path(out).is_file()


def one_line(info: pytest.ExceptionInfo[SmnerError]) -> str:
    message = str(info.value)
    assert "\n" not in message and "start again" in message, message
    return message


def test_a_staging_file_from_another_input_is_refused(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    first = write_input(tmp_path / "first.jsonl", 6)
    second = write_input(tmp_path / "second.jsonl", 6, start=100)
    out = tmp_path / "out.jsonl"
    interrupted(tiny_predictor, first, out)
    with pytest.raises(SmnerError) as info:
        run(tiny_predictor, second, out, resume=True)
    assert f"was made from {first.resolve()}, not {second.resolve()}" in one_line(info)

    # the same path, rewritten with other records of the same size: the content tells
    os.replace(first, tmp_path / "kept.jsonl")
    write_input(first, 6, start=1)
    with pytest.raises(SmnerError) as info:
        run(tiny_predictor, first, out, resume=True)
    assert "changed (size or modification time)" in one_line(info)


def test_records_of_another_input_are_refused_even_where_size_and_time_agree(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "posts.jsonl", 6)
    out = tmp_path / "out.jsonl"
    interrupted(tiny_predictor, source, out)
    info = source.stat()
    text = source.read_text(encoding="utf-8").replace("day 0", "day 9")
    source.write_text(text, encoding="utf-8")
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(SmnerError) as error:
        run(tiny_predictor, source, out, resume=True)
    assert "was made from other records than the first 4" in one_line(error)


def test_a_staging_file_with_lines_that_are_not_records_is_refused(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "posts.jsonl", 6)
    out = tmp_path / "out.jsonl"
    interrupted(tiny_predictor, source, out)
    partial = partial_path(out)
    lines = partial.read_bytes().splitlines(keepends=True)
    partial.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(SmnerError) as info:
        run(tiny_predictor, source, out, resume=True)
    assert "line 2 is not a JSON record" in one_line(info)


def test_a_torn_last_line_and_an_unrecorded_chunk_are_cut_and_redone(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "posts.jsonl", 7)
    reference = tmp_path / "reference.jsonl"
    run(tiny_predictor, source, reference)
    out = tmp_path / "out.jsonl"
    interrupted(tiny_predictor, source, out)
    partial = partial_path(out)
    lines = reference.read_bytes().splitlines(keepends=True)
    # a chunk written but killed before it was recorded, then a line torn by the kill
    partial.write_bytes(partial.read_bytes() + lines[4] + lines[5][:20])
    report = run(tiny_predictor, source, out, resume=True)
    assert report.resumed_after == 4 and report.written == 3
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists() and not fingerprint_path(out).exists()


def test_a_staging_file_with_more_records_than_the_input_is_refused(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "posts.jsonl", 8)
    out = tmp_path / "out.jsonl"
    interrupted(tiny_predictor, source, out, windows=3)
    info = source.stat()
    kept = source.read_text(encoding="utf-8").splitlines(keepends=True)[:4]
    source.write_text("".join(kept).ljust(info.st_size - 1) + "\n", encoding="utf-8")
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(SmnerError) as error:
        run(tiny_predictor, source, out, resume=True)
    assert "holds 6 records, more than the 4 of" in one_line(error)


def test_a_finished_output_of_another_input_is_not_called_complete(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    run(tiny_predictor, write_input(tmp_path / "three.jsonl", 3), out)
    with pytest.raises(SmnerError, match=r"finished output of 3 records, and .* holds 5"):
        run(tiny_predictor, write_input(tmp_path / "five.jsonl", 5), out, resume=True)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_staging_file_that_is_not_a_regular_file_is_refused(
    tiny_predictor: Predictor, tmp_path: Path, kind: str
) -> None:
    source = write_input(tmp_path / "posts.jsonl", 4)
    out = tmp_path / "out.jsonl"
    partial = partial_path(out)
    elsewhere = tmp_path / "elsewhere.jsonl"
    if kind == "symlink":
        interrupted(tiny_predictor, source, out, windows=1)
        os.replace(partial, elsewhere)
        partial.symlink_to(elsewhere)
        before = elsewhere.read_bytes()
    elif kind == "fifo":
        os.mkfifo(partial)
    else:
        partial.mkdir()
    for resume in (True, False):
        with pytest.raises(SmnerError) as info:
            run(tiny_predictor, source, out, resume=resume)
        assert f"{partial}: is a {kind if kind != 'fifo' else 'FIFO'}" in one_line(info)
    if kind == "symlink":
        assert partial.is_symlink() and elsewhere.read_bytes() == before
    assert not out.exists()


def test_a_staging_record_torn_by_a_kill_is_cut_so_that_a_run_resumes_twice(
    tiny_predictor: Predictor, tmp_path: Path
) -> None:
    source = write_input(tmp_path / "posts.jsonl", 9)
    reference = tmp_path / "reference.jsonl"
    run(tiny_predictor, source, reference)
    out = tmp_path / "out.jsonl"
    interrupted(tiny_predictor, source, out, windows=1)
    with open(fingerprint_path(out), "ab") as handle:
        handle.write(b'{"records": 4, "by')  # the kill came while the record was written
    job = FileJob(str(source), "unused", str(out), window=2, resume=True)
    with pytest.raises(Interrupted):
        run_file_job(job, JsonlEncoder(), load_predictor=lambda: StopsAfter(tiny_predictor, 1))
    report = run(tiny_predictor, source, out, resume=True)
    assert report.resumed_after == 4 and report.written == 5
    assert out.read_bytes() == reference.read_bytes()
