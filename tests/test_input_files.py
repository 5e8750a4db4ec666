"""Input files: bounded reads, no hangs on FIFOs, clear errors before any work starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smner.cli import main
from smner.data.conll import read_conll
from smner.data.images import ImageStatus, ImageStore
from smner.errors import DataFormatError, SmnerError

GOOD = "IMGID:1\nGeorge\tB-PER\nvisited\tO\n\nIMGID:2\nParis\tB-LOC\n"


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_stats_of_a_device_or_fifo_is_refused_without_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "stats", "/dev/zero"]) == 1
    assert "/dev/zero: is not a regular file" in error_line(capsys)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    assert main(["data", "stats", str(fifo)]) == 1
    assert "is not a regular file" in error_line(capsys)


def test_input_size_cap_is_an_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.txt"
    big.write_text(GOOD * 40_000)  # about 1.4 MB
    assert main(["data", "stats", str(big), "--max-input-mb", "1"]) == 1
    line = error_line(capsys)
    assert "larger than the limit of 1048576 bytes" in line and "--max-input-mb" in line
    assert main(["data", "stats", str(big), "--max-input-mb", "2", "--json"]) == 0


def test_cr_only_line_endings_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "mac.txt"
    path.write_bytes(GOOD.replace("\n", "\r").encode())
    with pytest.raises(DataFormatError, match=r"mac.txt:1: carriage return \(CR\) without"):
        read_conll(path)
    path.write_bytes(GOOD.replace("\n", "\r\n").encode())  # CRLF is fine
    assert len(read_conll(path)) == 2


def test_symlink_loop_in_the_image_folder_is_an_unreadable_image(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").symlink_to(images / "1.jpg")
    store = ImageStore(images)
    assert store.load("1") == (None, ImageStatus.UNREADABLE)
    assert "1 unreadable" in store.summary()


def test_missing_image_folder_is_an_error_not_all_images_missing(tmp_path: Path) -> None:
    with pytest.raises(SmnerError, match="image folder /nonexistent does not exist"):
        ImageStore("/nonexistent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SmnerError, match="is not a folder"):
        ImageStore(tmp_path / "file")


def test_heatmaps_path_that_is_a_file_fails_before_predicting(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "heat"
    taken.write_text("not a folder")
    args = ["predict", "--model", str(tiny_model_dir), "--text", "George", "--heatmaps", str(taken)]
    assert main(args) == 1
    assert "--heatmaps" in error_line(capsys) and capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "George", "tokens": ["George"]}', 'give "text" or "tokens", not both'),
        (b'{"text": "caf\xe9"}', "invalid UTF-8 at byte"),
        (b'{"text": "\\ud800 George"}', '"text" holds a lone surrogate'),
        (b'{"tokens": ["\\udfff"]}', '"tokens" holds a lone surrogate'),
    ],
)
def test_bad_jsonl_records_name_their_line(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: bytes,
    message: str,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "George visited Paris"}\n' + line + b"\n")
    argv = ["predict", "--model", str(tiny_model_dir), "--input", str(path)]
    assert main([*argv, "--strict"]) == 1
    err = error_line(capsys)
    assert f"{path}:2: " in err and message in err, err
    assert capsys.readouterr().out == ""
    # Without --strict the record keeps its place in the output, with the error.
    assert main(argv) == 0
    captured = capsys.readouterr()
    first, second = map(json.loads, captured.out.splitlines())
    assert first["entities"] is not None and "error" not in first
    assert second["id"] == "2" and f"{path}:2: " in second["error"]
    assert message in second["error"] and "entities" not in second
    assert "1 of 2 posts could not be predicted" in captured.err


def test_python_api_refuses_a_lone_surrogate(tiny_model_dir: Path) -> None:
    from smner.predict.predictor import Predictor

    predictor = Predictor.from_pretrained(tiny_model_dir)
    with pytest.raises(SmnerError, match="lone surrogate"):
        predictor.predict("\ud800 George")
    with pytest.raises(SmnerError, match="lone surrogate"):
        predictor.predict(["George", "\udfff"])
    assert json.dumps(predictor.predict("George visited Paris").to_dict())
