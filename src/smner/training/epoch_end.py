"""What happens when an epoch ends, as a list of callables the trainer calls in order.

Each takes ``(trainer, run, report)``. The default order matters: the best model is selected
before it is saved and before the log says whether the epoch was the best; early stopping is
decided before the checkpoint, which records it. Pass ``epoch_end=[...]`` to
:class:`~smner.training.trainer.Trainer` to add one (a plot, a notification) or drop one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from smner.config.experiment import ExperimentConfig
from smner.evaluation.metrics import Scores, format_prf
from smner.model.base import NERModel
from smner.processing.processor import Processor
from smner.saved.card import LOG_FILE
from smner.saved.folder import write_errors
from smner.training.distributed import DistributedContext
from smner.training.state import RunState


class Trainer(Protocol):
    """What an epoch-end callable may use of the trainer that calls it."""

    config: ExperimentConfig
    output_dir: Path
    context: DistributedContext
    #: facts of the run for the model card
    facts: dict[str, Any]

    def log(self, message: str) -> None: ...

    def save_checkpoint(self, run: Any, epoch: int, step_in_epoch: int) -> None: ...


class TrainingRun(Protocol):
    """What an epoch-end callable may use of the run: the model, its processor, the state."""

    model: NERModel
    processor: Processor
    state: RunState


@dataclass
class EpochReport:
    """One finished epoch: its 1-based number, its dev scores and its time."""

    epoch: int
    scores: Scores
    seconds: float
    #: whether its dev F1 is the best so far (set by :func:`select_best`)
    improved: bool = False


EpochEnd = Callable[[Trainer, TrainingRun, EpochReport], None]


def select_best(trainer: Trainer, run: TrainingRun, report: EpochReport) -> None:
    """Best-model selection on the dev F1 (strictly better than every earlier epoch)."""
    state = run.state
    report.improved = report.scores.f1 > state.best_f1
    if report.improved:
        state.best_f1, state.best_epoch, state.bad_epochs = report.scores.f1, report.epoch, 0
    else:
        state.bad_epochs += 1


def save_best_model(trainer: Trainer, run: TrainingRun, report: EpochReport) -> None:
    """``DIR/best/``: the model, its processor and its model card, replaced atomically."""
    if not (report.improved and trainer.context.is_main):
        return
    facts = {**trainer.facts, "best_epoch": report.epoch, "dev": report.scores.to_dict()}
    with write_errors(trainer.output_dir / "best"):
        run.model.save_pretrained(
            trainer.output_dir / "best", card_facts=facts, processor=run.processor
        )


def write_log(trainer: Trainer, run: TrainingRun, report: EpochReport) -> None:
    """One JSON line per epoch in ``DIR/log.jsonl`` and one line on stderr."""
    if trainer.context.is_main:
        record = {
            "epoch": report.epoch,
            "step": run.state.global_step,
            "dev_precision": report.scores.precision,
            "dev_recall": report.scores.recall,
            "dev_f1": report.scores.f1,
            "best": report.improved,
            "seconds": round(report.seconds, 2),
        }
        with open(trainer.output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    best = " (best)" if report.improved else ""
    trainer.log(f"epoch {report.epoch}: dev {format_prf(report.scores)}{best}")


def stop_early(trainer: Trainer, run: TrainingRun, report: EpochReport) -> None:
    """Stop after ``train.patience`` epochs without a better dev F1 (0: never)."""
    patience = trainer.config.train.patience
    run.state.stopped = bool(patience) and run.state.bad_epochs >= patience
    if run.state.stopped:
        trainer.log(f"no dev improvement for {patience} epochs: stopping early")


def save_checkpoint(trainer: Trainer, run: TrainingRun, report: EpochReport) -> None:
    """``DIR/last/``: the full state at the epoch's end, from which ``--resume`` continues."""
    trainer.save_checkpoint(run, report.epoch, 0)


#: The trainer's epoch-end callables, in the order it calls them.
DEFAULT_EPOCH_END: tuple[EpochEnd, ...] = (
    select_best,
    save_best_model,
    write_log,
    stop_early,
    save_checkpoint,
)
