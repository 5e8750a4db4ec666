"""The trainer's seams: epoch-end callables run in order, and the run's state is a dataclass
whose checkpoint keys are those older checkpoints hold."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import yaml

import smner.training.trainer as trainer_module
from smner.config.experiment import load_experiment
from smner.training.epoch_end import DEFAULT_EPOCH_END, EpochReport, select_best, stop_early
from smner.training.state import RunState
from smner.training.trainer import Trainer, TrainingRun
from tests.pipeline_fixture import write_corpus


def test_run_state_reads_a_checkpoint_dict_and_writes_the_same_keys() -> None:
    saved = {
        "epoch": 3,
        "step_in_epoch": 0,
        "global_step": 18,
        "best_f1": 0.75,
        "best_epoch": 2,
        "bad_epochs": 1,
        "stopped": False,
        "optimizer": {"state": {}},
    }
    state = RunState.from_checkpoint(saved)
    assert (state.epoch, state.best_f1, state.bad_epochs) == (3, 0.75, 1)
    assert state.to_dict() == {k: v for k, v in saved.items() if k != "optimizer"}
    # a checkpoint written before early stopping was recorded still loads
    assert RunState.from_checkpoint({"epoch": 1}).stopped is False


class _Scores:
    def __init__(self, f1: float) -> None:
        self.f1 = f1


class _Config:
    class train:
        patience = 2


class _Trainer:
    config = _Config()

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


class _Run:
    def __init__(self) -> None:
        self.state = RunState()


def test_selection_and_early_stopping_follow_the_dev_scores() -> None:
    trainer, run = _Trainer(), _Run()
    improved, stopped = [], []
    for epoch, f1 in enumerate([0.5, 0.7, 0.7, 0.6, 0.9], start=1):
        report = EpochReport(epoch, _Scores(f1), 1.0)  # type: ignore[arg-type]
        select_best(trainer, run, report)  # type: ignore[arg-type]
        stop_early(trainer, run, report)  # type: ignore[arg-type]
        improved.append(report.improved)
        stopped.append(run.state.stopped)
    assert improved == [True, True, False, False, True]
    assert (run.state.best_f1, run.state.best_epoch) == (0.9, 5)
    assert stopped == [False, False, False, True, False]


@pytest.mark.integration
def test_epoch_end_callables_run_in_order_and_can_be_replaced(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", copies=1)
    config = yaml.safe_load(corpus["config"].read_text())
    config["train"]["epochs"] = 2
    corpus["config"].write_text(yaml.safe_dump(config))
    seen: list[tuple[int, bool, int]] = []

    def record(trainer: Trainer, run: TrainingRun, report: EpochReport) -> None:
        seen.append((report.epoch, report.improved, run.state.epoch))

    experiment = load_experiment(str(corpus["config"]))
    result = Trainer(experiment, tmp_path / "run", epoch_end=[select_best, record]).fit()
    # selection ran before the extra callable; the state says the epoch has ended
    assert [epoch for epoch, _, _ in seen] == [1, 2]
    assert seen[0][1] is True and [state for _, _, state in seen] == [1, 2]
    assert result.best_epoch in (1, 2)
    # without save_best_model, save_checkpoint and write_log nothing of theirs is written
    assert not (tmp_path / "run" / "best").exists()
    assert not (tmp_path / "run" / "log.jsonl").exists()
    assert [c.__name__ for c in DEFAULT_EPOCH_END] == [
        "select_best",
        "save_best_model",
        "write_log",
        "stop_early",
        "save_checkpoint",
    ]


def test_no_trainer_function_is_over_40_lines() -> None:
    tree = ast.parse(inspect.getsource(trainer_module))
    long = {
        node.name: node.end_lineno - node.lineno + 1  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 40  # type: ignore[operator]
    }
    assert long == {}
