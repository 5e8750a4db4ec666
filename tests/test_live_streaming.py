"""Live input: standard input that stays open (``tail -f``) is predicted when it pauses, not
when a window of 1024 posts has filled; files keep their full windows."""

from __future__ import annotations

import json
import os
import queue
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smner.cli import main
from smner.predict.job import FileJob
from smner.predict.streaming import _End, cut_windows, live_windows

# --- the window cutter, on a fake clock ----------------------------------------------------


class FakeArrivals:
    """Items that arrive at given times on a fake clock, read as :func:`cut_windows` reads a
    queue: a wait for the next item moves the clock to its arrival, or by the timeout."""

    def __init__(self, script: list[tuple[float, Any]], end: float | None = None) -> None:
        self.script = list(script)
        self.end = end  # when the input ends (None: it stays open)
        self.now = 0.0
        self.cuts: list[float] = []  # the clock at each window yielded, filled by cut()

    def clock(self) -> float:
        return self.now

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self.script:
            arrival, item = self.script[0]
        elif self.end is not None:
            arrival, item = self.end, _End()
        else:
            arrival, item = float("inf"), None
        wait_until = self.now if not block else self.now + (timeout or 0.0)
        if block and timeout is None:
            wait_until = arrival
        if arrival > wait_until:
            if wait_until == float("inf"):
                raise AssertionError("a wait that never ends")
            self.now = wait_until
            raise queue.Empty
        self.now = max(self.now, arrival)
        if self.script:
            self.script.pop(0)
            return arrival, item
        return item

    def cut(self, size: int, flush_after: float, idle_marks: int = 0) -> Iterator[list[Any]]:
        for window in cut_windows(self, size, flush_after, self.clock, idle_marks):
            self.cuts.append(self.now)
            yield window


def test_a_window_is_cut_as_soon_as_it_is_full_without_waiting() -> None:
    arrivals = FakeArrivals([(0.0, i) for i in range(5)], end=0.0)
    assert list(arrivals.cut(size=2, flush_after=10.0)) == [[0, 1], [2, 3], [4]]
    assert arrivals.cuts == [0.0, 0.0, 0.0]


def test_a_pause_cuts_the_window_once_its_first_post_has_waited() -> None:
    script = [(0.0, "a"), (0.2, "b"), (0.3, "c"), (5.0, "d"), (5.5, "e")]
    arrivals = FakeArrivals(script, end=30.0)
    assert list(arrivals.cut(size=1024, flush_after=1.0)) == [["a", "b", "c"], ["d", "e"]]
    assert arrivals.cuts == [1.0, 6.0]  # not 30.0, when the input ends


def test_a_slow_trickle_is_cut_too_so_no_post_waits_longer_than_flush_after() -> None:
    script = [(0.4 * i, i) for i in range(10)]  # never a pause of 1 s
    arrivals = FakeArrivals(script)
    stream = arrivals.cut(size=1024, flush_after=1.0)
    cut = [next(stream) for _ in range(3)]
    assert cut == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    for window, at in zip(cut, arrivals.cuts, strict=True):
        assert at - script[window[0]][0] <= 1.0 + 1e-9


def test_posts_already_waiting_join_the_window_without_delay() -> None:
    # a backlog: everything arrived while the model was busy with an earlier window
    arrivals = FakeArrivals([(0.0, i) for i in range(7)], end=0.0)
    arrivals.now = 50.0
    assert list(arrivals.cut(size=3, flush_after=1.0)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert arrivals.cuts == [50.0, 50.0, 50.0]


def test_idle_marks_follow_a_window_cut_by_a_pause_only() -> None:
    script = [(0.0, 0), (0.0, 1), (0.0, 2), (3.0, 3)]
    arrivals = FakeArrivals(script, end=9.0)
    result = list(arrivals.cut(size=2, flush_after=1.0, idle_marks=2))
    # [0, 1] is full (the input flows: no marks); [2] and [3] are cut by pauses
    assert result == [[0, 1], [2], [], [], [3], [], []]
    assert arrivals.cuts[:4] == [0.0, 1.0, 1.0, 1.0]


def test_an_error_of_the_reader_comes_after_the_posts_read_before_it() -> None:
    arrivals = FakeArrivals([(0.0, "a")])
    arrivals.end = 0.5
    stream = cut_windows(
        _Failing(arrivals, OSError("read failed")), 4, 1.0, arrivals.clock, idle_marks=0
    )
    assert next(stream) == ["a"]
    with pytest.raises(OSError, match="read failed"):
        next(stream)


class _Failing:
    """``arrivals`` whose end is an error."""

    def __init__(self, arrivals: FakeArrivals, error: BaseException) -> None:
        self.arrivals = arrivals
        self.error = error

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        entry = self.arrivals.get(block, timeout)
        return _End(self.error) if isinstance(entry, _End) else entry


def test_cut_windows_refuses_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(cut_windows(FakeArrivals([]), 0, 1.0))
    with pytest.raises(ValueError, match="flush_after"):
        next(cut_windows(FakeArrivals([]), 4, -1.0))


# --- the reader thread, on the real clock --------------------------------------------------


def test_live_windows_gives_a_window_while_its_source_is_still_waiting() -> None:
    def source() -> Iterator[int]:
        yield from (0, 1, 2)
        time.sleep(1.5)  # the input pauses
        yield from (3, 4)

    start = time.monotonic()
    stream = live_windows(source(), size=1024, flush_after=0.1)
    assert next(stream) == [0, 1, 2]
    assert time.monotonic() - start < 1.4, "the first window waited for the pause to end"
    assert list(stream) == [[3, 4]]


def test_live_windows_fills_windows_from_a_fast_source() -> None:
    stream = live_windows(iter(range(2500)), size=1000, flush_after=30.0)
    assert [len(w) for w in stream] == [1000, 1000, 500]


def test_live_windows_raises_the_readers_error_in_the_callers_thread() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise OSError("the pipe broke")

    stream = live_windows(source(), size=4, flush_after=0.05)
    assert next(stream) == [1]
    with pytest.raises(OSError, match="the pipe broke"):
        next(stream)


def test_closing_live_windows_stops_its_reader() -> None:
    def endless() -> Iterator[int]:
        n = 0
        while True:
            n += 1
            yield n

    stream = live_windows(endless(), size=3, flush_after=1.0)
    assert next(stream) == [1, 2, 3]
    stream.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(t.name == "smner-live-reader" for t in threading.enumerate()):
            break
        time.sleep(0.02)
    assert not any(t.name == "smner-live-reader" for t in threading.enumerate())


def test_only_a_non_strict_standard_input_is_live() -> None:
    assert FileJob("-", "m").live
    assert not FileJob("posts.jsonl", "m").live  # files: full windows, as before
    assert not FileJob("-", "m", strict=True).live  # stdin spooled whole first
    assert not FileJob("-", "m", flush_after=None).live  # --format table


def test_help_says_what_does_not_stream(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--flush-after SECONDS with --input -" in text
    assert "(default: 1.0)" in text
    assert "written at the end of the input (it does not stream)" in text
    assert "reads standard input to its end first, so it does not stream" in text


# --- a smner process fed through a pipe that stays open ------------------------------------


class Feed:
    """``smner predict --input -`` with its stdin held open; lines are read with a deadline."""

    def __init__(self, model: Path, *extra: str) -> None:
        argv = ["predict", "--model", str(model), "--input", "-", *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smner", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self.pending = b""

    def send(self, *records: dict[str, Any]) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(json.dumps(r).encode() + b"\n" for r in records))
        self.proc.stdin.flush()
        return time.monotonic()

    def lines(self, count: int, timeout: float) -> list[tuple[float, dict[str, Any]]]:
        """``count`` output records with the time each was read; fails after ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        got: list[tuple[float, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            while b"\n" in self.pending and len(got) < count:
                line, self.pending = self.pending.split(b"\n", 1)
                got.append((time.monotonic(), json.loads(line)))
            if len(got) == count:
                break
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                stderr = self.close_and_errors()
                raise AssertionError(f"{len(got)} of {count} lines in {timeout} s; {stderr}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout ended after {len(got)} of {count} lines")
            self.pending += chunk
        return got

    def close_and_errors(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        _out, err = self.proc.communicate(timeout=60)
        return err.decode(errors="replace")

    def finish(self) -> tuple[int, bytes, bytes]:
        out, err = self.proc.communicate(timeout=120)  # closes stdin first
        return self.proc.returncode, self.pending + out, err

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.mark.integration  # a smner process
@pytest.mark.parametrize("workers", ["1", "2"])
def test_posts_in_a_pipe_that_stays_open_come_out_before_it_closes(
    tiny_model_dir: Path, workers: str
) -> None:
    feed = Feed(tiny_model_dir, "--workers", workers)  # --window 1024, --flush-after 1.0
    try:
        feed.send({"id": "warm", "text": "George"})
        # the model loads first (seconds on a busy machine): this line says it is ready
        assert feed.lines(1, timeout=180)[0][1]["id"] == "warm"
        delays = []
        for burst in range(3):
            posts = [{"id": f"{burst}-{i}", "text": "George visited Paris"} for i in range(3)]
            sent = feed.send(*posts)
            got = feed.lines(3, timeout=60)
            assert [record["id"] for _at, record in got] == [p["id"] for p in posts]
            assert all(record["tokens"] == ["George", "visited", "Paris"] for _, record in got)
            delays.append(got[-1][0] - sent)
            assert feed.proc.poll() is None  # still reading the open pipe
        # 1 s of waiting for more posts, then a tiny model: well under 2 s on an idle machine;
        # the bound leaves room for a loaded one
        assert statistics.median(delays) < 10, delays
        feed.send({"id": "last", "text": "Paris"})
        code, rest, err = feed.finish()
        assert code == 0, err.decode(errors="replace")
        assert [json.loads(line)["id"] for line in rest.splitlines()] == ["last"]
    finally:
        feed.cleanup()


@pytest.mark.integration  # a smner process
def test_a_reader_that_goes_away_ends_a_live_run_quietly_while_its_input_is_open(
    tiny_model_dir: Path,
) -> None:
    feed = Feed(tiny_model_dir)
    try:
        feed.send({"id": "a", "text": "George"})
        assert feed.lines(1, timeout=180)[0][1]["id"] == "a"
        assert feed.proc.stdout is not None
        feed.proc.stdout.close()  # | head -n 1
        feed.send({"id": "b", "text": "Paris"})  # its line finds no reader; stdin stays open
        assert feed.proc.wait(timeout=60) == 141
        assert feed.proc.stderr is not None
        assert feed.proc.stderr.read() == b""  # no abort over a reader thread left waiting
    finally:
        feed.cleanup()


# --- standard input read from its descriptor -----------------------------------------------


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_descriptor_lines_reads_as_a_buffered_reader_does(tmp_path: Path, block: int) -> None:
    import io
    import random

    from smner.data.records.read import DescriptorLines

    rng = random.Random(block)
    data = (
        b"".join(
            b"x" * rng.randrange(0, 20) + (b"\r\n" if rng.random() < 0.2 else b"\n")
            for _ in range(60)
        )
        + b"tail without a newline"
    )
    path = tmp_path / "lines"
    path.write_bytes(data)
    expected = io.BytesIO(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        lines = DescriptorLines(fd, block=block)
        while True:
            limit = rng.choice([-1, 1, 5, 12, 40])
            line = lines.readline(limit)
            assert line == expected.readline(limit)
            if not line:
                break
        assert lines.readline() == b""
    finally:
        os.close(fd)


def test_descriptor_lines_gives_a_line_while_the_pipe_stays_open() -> None:
    from smner.data.records.read import DescriptorLines

    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b'{"text": "George"}\n{"text": "Par')
        lines = DescriptorLines(read_end)
        assert lines.readline(1000) == b'{"text": "George"}\n'  # does not wait for more
        os.write(write_end, b'is"}\n')
        assert lines.readline(1000) == b'{"text": "Paris"}\n'
    finally:
        os.close(read_end)
        os.close(write_end)
