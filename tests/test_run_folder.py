"""A run folder belongs to one training at a time, and a damaged checkpoint is never resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import smner
import smner.training.trainer as training
from smner.config.experiment import load_experiment
from smner.errors import SmnerError
from smner.training.run_lock import LOCK_FILE, RunLock, RunLockedError
from tests.pipeline_fixture import write_corpus

pytestmark = pytest.mark.integration  # every test trains


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), copies=1)


def one_epoch(corpus: dict[str, Path], *extra: str) -> object:
    return load_experiment(str(corpus["config"]), ["train.epochs=1", *extra])


def test_second_run_on_the_same_folder_is_refused_naming_the_first(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunLockedError) as info:
            smner.train(one_epoch(corpus), run)
        message = str(info.value)
        assert f"PID {os.getpid()}" in message and "another smner train" in message
        assert "\n" not in message
    assert not (run / "log.jsonl").exists()
    smner.train(one_epoch(corpus), run)  # released: the folder is free again
    assert not (run / LOCK_FILE).exists()  # a run that ends removes its lock


def test_stale_lock_and_staging_folders_of_a_killed_run_are_cleaned(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 7, "host": "h", "started": 0}))
    staging = run / ".last.k1ll3d"
    (staging / "model").mkdir(parents=True)
    (staging / "model" / "model.safetensors").write_bytes(b"\0" * 1000)
    (run / ".log.jsonl.abc.tmp").write_text("half")
    smner.train(one_epoch(corpus), run)
    err = capsys.readouterr().err
    assert "taking over the lock of a run that ended (PID 4194311" in err
    assert not staging.exists() and not (run / ".log.jsonl.abc.tmp").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("damaged", ["trainer_state.pt", "model/model.safetensors"])
def test_a_flipped_byte_in_the_checkpoint_is_refused_on_resume(
    corpus: dict[str, Path], tmp_path: Path, damaged: str
) -> None:
    run = tmp_path / "run"
    smner.train(one_epoch(corpus), run)
    path = run / "last" / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SmnerError, match="does not match the SHA-256"):
        smner.train(one_epoch(corpus, "train.epochs=2"), run, resume=True)


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    smner.train(one_epoch(corpus), run)
    before = (run / "last" / "trainer_state.pt").read_bytes()
    real_save = torch.save

    def full(obj: object, path: object, *args: object, **kwargs: object) -> None:
        real_save(obj, path, *args, **kwargs)
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
            "file data/0: file write failed\nmore detail"
        )

    monkeypatch.setattr(training.torch, "save", full)
    with pytest.raises(SmnerError) as info:
        smner.train(one_epoch(corpus, "train.epochs=2"), run, resume=True)
    message = str(info.value)
    assert "could not be written" in message and "\n" not in message
    assert (run / "last" / "trainer_state.pt").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".last.")]
    monkeypatch.undo()
    assert smner.train(one_epoch(corpus, "train.epochs=2"), run, resume=True).epochs_run == 2
