"""``smner predict --workers N``: processes that each hold the model give the same output as
one process, in input order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smner.cli import main
from smner.errors import SmnerError
from smner.predict.workers import WorkerPool, WorkerSpec, threads_per_worker
from tests.tiny import solid_image


def test_threads_are_split_between_workers() -> None:
    assert threads_per_worker(1, total=8) == 8
    assert threads_per_worker(2, total=8) == 4
    assert threads_per_worker(3, total=8) == 2
    assert threads_per_worker(4, total=2) == 1  # never none


@pytest.mark.integration  # starts worker processes
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two CPUs")
def test_two_workers_write_what_one_writes(tiny_model_dir: Path, tmp_path: Path) -> None:
    solid_image((40, 200, 40)).save(tmp_path / "green.jpg")
    words = ["George", "visited", "Paris", "today", "with", "New", "York"]
    records = [
        {"id": i, "text": " ".join(words[: 1 + (i * 3) % 7])}
        | ({"image": "green.jpg"} if i % 4 == 0 else {})
        for i in range(41)
    ]
    lines = [json.dumps(r) for r in records]
    lines[9] = '{"text": "not closed"'  # a bad record keeps its place
    source = tmp_path / "posts.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(source), "--window", "4"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main([*argv, "--output", str(one), "--explain"]) == 0
    assert main([*argv, "--output", str(two), "--explain", "--workers", "2"]) == 0
    # Same records, order, entities and types; scores may differ in the last printed digit
    # because one process and two single-threaded workers sum matrix products in another order.
    out = [json.loads(line) for line in two.read_text().splitlines()]
    assert_same_up_to_rounding(out, [json.loads(line) for line in one.read_text().splitlines()])
    assert [r["id"] for r in out] == [*range(9), "10", *range(10, 41)]
    assert "error" in out[9] and out[0]["image_status"] == "ok"


def assert_same_up_to_rounding(got: object, expected: object) -> None:
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-5)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key, value in expected.items():
            assert_same_up_to_rounding(got[key], value)
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for item, value in zip(got, expected, strict=True):
            assert_same_up_to_rounding(item, value)
    else:
        assert got == expected


def test_a_worker_that_cannot_load_the_model_stops_the_run(tmp_path: Path) -> None:
    spec = WorkerSpec(str(tmp_path / "no-model"))
    with (
        pytest.raises(SmnerError, match="worker 0 could not load the model"),
        WorkerPool(spec, workers=1) as pool,
    ):
        list(pool.run([["George visited Paris"]]))
