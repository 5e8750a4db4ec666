"""Every verb, given a bad option value, ends with one line on stderr and a non-zero exit:
never a traceback, never a silent success."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smner.cli import main

NUMBERS = ["-1", "0", "abc", "", "1e999", "nan", "-0.5"]
MISSING = "/nonexistent/smner"


def cases(folder: Path, fifo: Path) -> dict[str, list[list[str]]]:
    """verb -> argument lists, each with exactly one bad value (the others are harmless)."""
    config = "configs/twitter2017.yaml"
    train = ["train", "--config", config, "--output", str(folder / "run")]
    model = ["--model", MISSING]
    evaluate = ["evaluate", "--model", MISSING, "--data"]
    score = ["score", "--gold", MISSING, "--pred", MISSING]
    synth = ["synth", "--output", str(folder / "s")]
    download = ["data", "download", "twitter2017", "--dest", str(folder / "x")]
    return {
        "train": [
            ["train", "--config", bad, "--output", str(folder / "r")]
            for bad in (MISSING, "/dev/zero", str(folder), str(fifo))
        ]
        + [
            [*train, "--set", bad]
            for bad in (
                "train.epochs=-1",
                "train.epochs=0",
                "train.epoch=3",
                "train.batch_size=0",
                "train.head_lr=.nan",
                "train.warmup_ratio=5",
                "train.device=foo",
                "model.dropout=5",
                "model.hidden_size=-4",
                "model.attention_heads=0",
                "model.labels=[PER, PER]",
                "epochs=3",
                "nosuch.key=1",
            )
        ],
        "evaluate": [[*evaluate, MISSING, "--batch-size", n] for n in NUMBERS]
        + [[*evaluate, MISSING, "--device", "foo"]]
        + [[*evaluate, "/dev/zero", "--max-input-mb", n] for n in NUMBERS],
        "predict": [["predict", *model, "--text", "x", "--batch-size", n] for n in NUMBERS]
        + [["predict", *model, "--input", bad] for bad in (MISSING, "/dev/zero", str(fifo))]
        + [["predict", *model, "--text", "x", "--heatmaps", "/dev/null"]]
        + [["predict", *model, "--text", "x", "--device", "cuda:99"]],
        "score": [
            ["score", "--gold", bad, "--pred", bad]
            for bad in (MISSING, "/dev/zero", str(fifo), str(folder))
        ]
        + [[*score, "--max-input-mb", n] for n in NUMBERS],
        "synth": [[*synth, "--posts", n] for n in NUMBERS]
        + [[*synth, "--noise", n] for n in ("2", "-1", "nan", "abc")]
        + [[*synth, "--image-size", n] for n in ("1", "-3", "abc")],
        "serve": [["serve", *model, "--port", n] for n in ("70000", "-1", "abc")]
        + [["serve", *model, "--max-batch", n] for n in NUMBERS]
        + [["serve", *model, "--header-timeout", n] for n in NUMBERS]
        + [["serve", *model, "--body-timeout", n] for n in NUMBERS]
        + [["serve", *model, "--max-connections", n] for n in NUMBERS]
        + [["serve", *model, "--batch-wait-ms", "-1"], ["serve", *model]],
        "demo": [["demo", "--output", str(folder / "d"), "--posts", n] for n in NUMBERS]
        + [["demo", "--output", str(folder / "d"), "--epochs", n] for n in NUMBERS],
        "data": [["data", "stats", bad] for bad in (MISSING, "/dev/zero", str(fifo), str(folder))]
        + [["data", "stats", MISSING, "--max-span-width", n] for n in NUMBERS]
        + [["data", "download", "nosuch", "--dest", str(folder / "x")]]
        + [[*download, "--timeout", n] for n in NUMBERS],
    }


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bad-options")
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    return folder, fifo


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def all_cases() -> list[list[str]]:
    folder, fifo = Path("/tmp/smner-bad-options"), Path("/tmp/smner-bad-options/fifo")
    return [argv for argvs in cases(folder, fifo).values() for argv in argvs]


def check(argv: list[str]) -> None:
    code, err = run(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, (argv, err)
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert "error" in lines[0], (argv, err)


@pytest.mark.parametrize("index", range(len(all_cases())))
def test_every_bad_option_value_gives_one_line_and_a_nonzero_exit(
    index: int, places: tuple[Path, Path]
) -> None:
    check([a.replace("/tmp/smner-bad-options", str(places[0])) for a in all_cases()[index]])


#: (argument list with {} for the value, where a missing model or file makes any value fail)
NUMERIC = [
    ["evaluate", "--model", MISSING, "--data", MISSING, "--batch-size", "{}"],
    ["predict", "--model", MISSING, "--text", "x", "--batch-size", "{}"],
    ["serve", "--model", MISSING, "--port", "{}"],
    ["serve", "--model", MISSING, "--header-timeout", "{}"],
    ["serve", "--model", MISSING, "--max-buffered-mb", "{}"],
    ["data", "stats", MISSING, "--max-span-width", "{}"],
    ["score", "--gold", MISSING, "--pred", MISSING, "--max-input-mb", "{}"],
    ["train", "--config", MISSING, "--output", MISSING, "--set", "train.epochs={}"],
    ["train", "--config", "configs/twitter2017.yaml", "--output", MISSING, "--set", "{}"],
]


@settings(max_examples=150, deadline=None)
@given(
    template=st.sampled_from(NUMERIC),
    value=st.one_of(
        st.integers(max_value=0).map(str),
        st.floats().map(str),
        st.text(max_size=12).filter(lambda v: not v.startswith("-")),
    ),
)
def test_random_option_values_give_one_line_and_a_nonzero_exit(
    template: list[str], value: str
) -> None:
    check([a.replace("{}", value) for a in template])
