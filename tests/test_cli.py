from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from seqeval.metrics import f1_score
from seqeval.metrics.sequence_labeling import get_entities

import smner.data.download as download_module
from smner.cli import build_parser, main
from smner.data.conll import read_conll
from tests.benchmark_fixture import Benchmark

GOLD = "IMGID:1\nGeorge\tB-PER\nin\tO\nParis\tB-LOC\n\nIMGID:2\nApple\tB-ORG\nrocks\tO\n"
PRED = "IMGID:1\nGeorge\tB-PER\nin\tO\nParis\tB-ORG\n\nIMGID:2\nApple\tB-ORG\nrocks\tO\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> object:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "IMGID:1\nA\tI-PER\nB\tI-PER\nC\tI-PER\nx\tO\n\nplain\tB-LOC\n"
    (stats,) = run_json(
        capsys,
        ["data", "stats", str(write(tmp_path / "a.txt", text)), "--json", "--max-span-width", "2"],
    )
    assert stats == {
        "path": str(tmp_path / "a.txt"),
        "posts": 2,
        "tokens": 5,
        "entities": {"LOC": 1, "PER": 1},
        "entities_total": 2,
        "i_starts": 1,
        "length_histogram": {"1": 1, "3": 1},
        "max_span_width": 2,
        "longer_than_max_width": 1,
        "posts_with_image_id": 1,
        "max_post_tokens": 4,
    }


def test_stats_on_twitter2015(
    benchmark_data: Benchmark, capsys: pytest.CaptureFixture[str]
) -> None:
    """Posts and entities that begin with I- (4000 and 186 in the real training file)."""
    path = benchmark_data.root / "twitter2015" / "train.txt"
    (stats,) = run_json(capsys, ["data", "stats", str(path), "--json"])
    expected = sum(len(get_entities(ex.tags)) for ex in read_conll(path))
    assert stats["posts"] == benchmark_data.posts("twitter2015/train.txt")
    assert stats["entities_total"] == expected
    assert stats["i_starts"] == benchmark_data.i_starts("twitter2015/train.txt") > 0


def test_score_json_agrees_with_seqeval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gold, pred = write(tmp_path / "gold.txt", GOLD), write(tmp_path / "pred.txt", PRED)
    scores = run_json(capsys, ["score", "--gold", str(gold), "--pred", str(pred), "--json"])
    assert set(scores) == {"precision", "recall", "f1", "support", "predicted", "per_type"}
    assert scores["support"] == 3 and scores["predicted"] == 3
    y_true = [ex.tags for ex in read_conll(gold)]
    y_pred = [ex.tags for ex in read_conll(pred)]
    assert abs(scores["f1"] - f1_score(y_true, y_pred)) < 1e-9
    assert scores["per_type"]["ORG"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    assert main(["score", "--gold", str(gold), "--pred", str(pred)]) == 0
    assert "overall" in capsys.readouterr().out


def test_score_refuses_mismatched_tokens_naming_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold = write(tmp_path / "gold.txt", GOLD)
    pred = write(tmp_path / "pred.txt", PRED.replace("Apple", "Pear"))
    assert main(["score", "--gold", str(gold), "--pred", str(pred)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"smner: error: {gold}:7 and {pred}:7 differ: posts must have the same tokens "
        "(gold 2 tokens, prediction 2)"
    )
    # Each file's line comes from its own posts: here only the gold file has IMGID lines.
    plain = "".join(f"{line}\n" for line in PRED.splitlines() if not line.startswith("IMGID:"))
    plain_pred = write(tmp_path / "plain.txt", plain.replace("Apple", "Pear"))
    assert main(["score", "--gold", str(gold), "--pred", str(plain_pred)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"smner: error: {gold}:7 and {plain_pred}:5 differ")
    short = write(tmp_path / "short.txt", PRED.split("\n\n")[0] + "\n")
    assert main(["score", "--gold", str(gold), "--pred", str(short)]) == 1
    assert "has 2 posts but" in capsys.readouterr().err


def test_malformed_input_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.txt", "IMGID:1\nfoo\tB-PER\nbar\n")
    proc = subprocess.run(
        [sys.executable, "-m", "smner.cli", "data", "stats", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"smner: error: {bad}:3: expected 'token<TAB>tag' or 'IMGID:<id>', "
        "found a token without a tag"
    ]


def _verbs(parser: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in getattr(parser, "_actions", []):
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for name, sub in choices.items():
                yield (*prefix, name)
                yield from _verbs(sub, (*prefix, name))


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    verbs = list(_verbs(build_parser()))
    assert ("data", "stats") in verbs and ("score",) in verbs
    for verb in [(), *verbs]:
        with pytest.raises(SystemExit) as info:
            main([*verb, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: smner" in out and len(out) > 200, verb


# --- download, against a local HTTP server ---------------------------------------------------


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A local server holding a fake twitter2015 release whose checksums are patched in."""
    root = tmp_path / "mirror"
    (root / "twitter2015").mkdir(parents=True)
    checksums = {}
    for name in ("train.txt", "valid.txt", "test.txt"):
        data = f"IMGID:1\n{name}\tO\n".encode()
        (root / "twitter2015" / name).write_bytes(data)
        checksums[name] = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(download_module.CHECKSUMS, "twitter2015", checksums)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[misc]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_download_verifies_and_writes(
    mirror: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, root = mirror
    dest = tmp_path / "dest"
    assert main(["data", "download", "twitter2015", "--dest", str(dest), "--base-url", url]) == 0
    for name in ("train.txt", "valid.txt", "test.txt"):
        assert (dest / name).read_bytes() == (root / "twitter2015" / name).read_bytes()
    out = capsys.readouterr().out
    assert "SHA-256 verified" in out and "images" in out


def test_download_refuses_corrupt_file_and_leaves_nothing(
    mirror: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, root = mirror
    (root / "twitter2015" / "test.txt").write_bytes(b"tampered\n")
    dest = tmp_path / "dest"
    assert main(["data", "download", "twitter2015", "--dest", str(dest), "--base-url", url]) == 1
    assert "does not match" in capsys.readouterr().err
    assert not dest.exists() or list(dest.iterdir()) == []


def test_download_unreachable_host_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dest"
    argv = [
        "data",
        "download",
        "twitter2017",
        "--dest",
        str(dest),
        "--timeout",
        "2",
        "--base-url",
        "http://127.0.0.1:9",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("smner: error: http://127.0.0.1:9/twitter2017/train.txt: cannot reach")
    assert not dest.exists()
