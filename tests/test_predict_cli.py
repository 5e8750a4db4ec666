"""``smner predict`` and ``smner data`` as a user meets them: paths, warnings, formats, pipes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smner.cli import main
from tests.test_serve import POST


def test_jsonl_image_paths_are_relative_to_the_jsonl_file(
    tiny_model_dir: Path,
    post_images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = str(tiny_model_dir)
    posts = tmp_path / "posts"
    (posts / "pics").mkdir(parents=True)
    shutil.copy(post_images / "0.jpg", posts / "pics" / "0.jpg")
    records = [
        {"id": "rel", "text": POST, "image": "pics/0.jpg"},
        {"id": "abs", "text": POST, "image": str(posts / "pics" / "0.jpg")},
        {"id": "cwd", "text": POST, "image": "posts/pics/0.jpg"},  # relative to the cwd
        {"id": "gone", "text": POST, "image": "pics/none.jpg"},
        {"id": "none", "text": POST},
    ]
    source = posts / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", model, "--input", str(source)]) == 0
    captured = capsys.readouterr()
    out = {r["id"]: r for r in map(json.loads, captured.out.splitlines())}
    assert out["rel"]["image_status"] == "ok" and out["rel"]["image"] == "pics/0.jpg"
    assert out["abs"]["image_status"] == "ok"
    assert out["cwd"]["image_status"] == "missing"
    assert out["gone"]["image_status"] == "missing"
    assert out["none"]["image_status"] == "no image"
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert warnings == [
        f"smner: warning: 2 of 4 images named in {source} were not found (first: "
        f"{posts / 'posts/pics/0.jpg'}); relative image paths are read from the JSONL file's "
        f"folder, {posts.resolve()}; those posts were predicted without an image"
    ]


def test_a_missing_text_image_and_heatmaps_without_images_say_why(
    tiny_model_dir: Path, post_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model_dir)
    heat = tmp_path / "heat"
    argv = ["predict", "--model", model, "--text", POST, "--heatmaps", str(heat)]
    assert main([*argv, "--image", str(tmp_path / "nope.jpg")]) == 0
    err = capsys.readouterr().err
    assert "smner: warning: 1 of 1 images named were not found (first: " in err
    assert "heatmap: post 1: nothing drawn, its image was not used (missing: " in err
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "heatmap: post 1: nothing drawn, the post has no image" in err
    assert "warning" not in err
    assert not heat.exists()
    assert main([*argv, "--image", str(post_images / "0.jpg")]) == 0
    assert "heatmap: " + str(heat) in capsys.readouterr().err


def test_formats_conll_and_table(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tiny_model_dir)
    assert main(["predict", "--model", model, "--text", POST]) == 0
    record = json.loads(capsys.readouterr().out)
    assert main(["predict", "--model", model, "--text", POST, "--format", "conll"]) == 0
    conll = capsys.readouterr().out
    assert conll.endswith("\n\n")  # a blank line closes each post, as in the data files
    lines = [line for line in conll.splitlines() if line]
    assert [line.split("\t")[0] for line in lines] == record["tokens"]
    tags = [line.split("\t")[1] for line in lines]
    for e in record["entities"]:
        assert tags[e["start"]] == f"B-{e['type']}"
        assert all(t == f"I-{e['type']}" for t in tags[e["start"] + 1 : e["end"]])
    assert tags.count("O") == len(tags) - sum(e["end"] - e["start"] for e in record["entities"])

    assert main(["predict", "--model", model, "--text", POST, "--format", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["post", "entity", "type", "tokens", "score", "image"]
    assert len(table) == 1 + max(1, len(record["entities"]))
    for row, e in zip(table[1:], record["entities"], strict=False):
        assert row.split()[0] == "1" and e["text"] in row and e["type"] in row
        assert f"{e['start']}-{e['end']}" in row and f"{e['score']:.2f}" in row


def test_data_stats_json_is_always_a_list_and_survives_a_closed_pipe(tmp_path: Path) -> None:
    data = tmp_path / "a.txt"
    data.write_text("IMGID:1\nGeorge\tB-PER\nvisited\tO\n\n", encoding="utf-8")
    one = subprocess.run(
        [sys.executable, "-m", "smner", "data", "stats", str(data), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert one.returncode == 0 and isinstance(json.loads(one.stdout), list)
    # Far more output than a pipe holds, read by a consumer that stops after one line.
    files = " ".join(["a.txt"] * 3000)
    shell = f"set -o pipefail; {sys.executable} -m smner data stats {files} --json | head -n 1"
    proc = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": ""},
        cwd=tmp_path,
    )
    assert proc.stdout == "[\n"
    assert proc.stderr == ""
    assert proc.returncode == 141  # as a shell tool killed by SIGPIPE
