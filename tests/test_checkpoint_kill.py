"""A training run killed while it writes a checkpoint: the staging folder it leaves is gone
once ``--resume`` has finished, and the checkpoint resumed from is the whole previous one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import smner
from smner.config.experiment import load_experiment
from smner.model.base import NERModel
from smner.training.run_folder import KILL_IN_CHECKPOINT_ENV, STATE_FILE, load_last
from tests.pipeline_fixture import write_corpus


@pytest.mark.integration  # trains, in a process that is killed and in this one
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_mid_checkpoint_resumes_from_the_whole_one_and_leaves_no_staging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "corpus", copies=1)
    run = tmp_path / "run"
    argv = ["train", "--config", str(corpus["config"]), "--output", str(run)]
    argv += ["--set", "train.epochs=2", "--set", "train.keep_last=true"]
    env = {**os.environ, KILL_IN_CHECKPOINT_ENV: "2", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-m", "smner", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # the kill came halfway through the second checkpoint: its model is staged, its state not
    (staging,) = [p for p in run.iterdir() if p.name.startswith(".last.")]
    assert (staging / "model" / "model.safetensors").is_file()
    assert not (staging / STATE_FILE).exists()
    found = load_last(run)  # verifies the state's SHA-256
    assert found is not None
    folder, state = found
    assert folder == run / "last" and state["epoch"] == 1
    assert NERModel.from_pretrained(folder / "model") is not None  # verifies the weights

    config = load_experiment(str(corpus["config"]), ["train.epochs=2", "train.keep_last=true"])
    smner.train(config, run, resume=True)
    err = capsys.readouterr().err
    assert f"removing {staging}, left half-written by a run that was stopped" in err
    assert f"resuming from {run / 'last'} (epoch 2" in err
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    found = load_last(run)
    assert found is not None and found[1]["epoch"] == 2
