"""A training run's folder on disk: the resumable checkpoint ``last/``, its log and clean-up.

``DIR/last/`` holds the model folder and ``trainer_state.pt`` (optimizer, scheduler, RNG states
of every rank, epoch and step) with the state's SHA-256 beside it, swapped in atomically so a
run killed at any moment leaves either the old checkpoint or the new one. The functions here
touch files only; the :class:`~smner.training.trainer.Trainer` decides when to call them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smner.config.experiment import TrainConfig
from smner.errors import SmnerError
from smner.fileio import atomic_write_text, make_staging_dir, replace_directory
from smner.model.base import NERModel
from smner.processing.processor import Processor
from smner.saved.card import LOG_FILE, TEST_SCORES_FILE, refresh_run_cards
from smner.saved.folder import file_sha256, write_errors

STATE_FILE = "trainer_state.pt"
#: When set to N, the process kills itself (SIGKILL, so no clean-up runs) in its N-th
#: checkpoint write, after the model folder is staged and before the training state is: a
#: deterministic point at which to test what a killed run leaves and what resuming clears.
KILL_IN_CHECKPOINT_ENV = "SMNER_KILL_IN_CHECKPOINT"
_checkpoints_written = 0
#: ``{file name: SHA-256}`` of the files in ``DIR/last`` besides the model folder
CHECKSUMS_FILE = "checksums.json"

__all__ = [
    "CHECKSUMS_FILE",
    "LOG_FILE",
    "STATE_FILE",
    "TEST_SCORES_FILE",
    "check_resumable",
    "finish_run_folder",
    "load_checkpoint_model",
    "load_last",
    "remove_stale_staging",
    "rng_state",
    "save_last",
    "set_rng_state",
    "trim_log",
    "verify_state_checksum",
    "write_state_checksum",
]


def rng_state() -> dict[str, Any]:
    """The random states a resumed run needs to draw the same numbers (this process's)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_state_checksum(folder: Path) -> None:
    """Record the SHA-256 of ``folder/trainer_state.pt`` in ``folder/checksums.json``."""
    record = {STATE_FILE: file_sha256(folder / STATE_FILE)}
    atomic_write_text(folder / CHECKSUMS_FILE, json.dumps(record, indent=2) + "\n")


def verify_state_checksum(folder: Path) -> None:
    """Refuse a training state that does not match its recorded SHA-256 (the model folder
    beside it is verified by :meth:`NERModel.from_pretrained`)."""
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        return  # a checkpoint written before checksums were recorded
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get(STATE_FILE)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        recorded = None
    if not isinstance(recorded, str) or file_sha256(folder / STATE_FILE) != recorded:
        raise SmnerError(
            f"resume: {folder / STATE_FILE} does not match the SHA-256 in {path} (the "
            "checkpoint is damaged); start afresh without --resume"
        )


def save_last(
    output_dir: Path, model: NERModel, processor: Processor, state: dict[str, Any]
) -> None:
    """Model folder plus trainer state, swapped in as ``output_dir/last`` in one rename."""
    global _checkpoints_written
    _checkpoints_written += 1
    last = output_dir / "last"
    with write_errors(last):
        staging = make_staging_dir(output_dir, ".last.")
        try:
            model.save_pretrained(staging / "model", processor=processor)
            if os.environ.get(KILL_IN_CHECKPOINT_ENV) == str(_checkpoints_written):
                os.kill(os.getpid(), signal.SIGKILL)
            torch.save(state, staging / STATE_FILE)
            write_state_checksum(staging)
            replace_directory(staging, last)
        finally:
            if staging.exists():
                shutil.rmtree(staging)


def load_last(output_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint's folder and its verified trainer state; None when there is none."""
    last = output_dir / "last"
    old = output_dir / "last.old"
    if not (last / STATE_FILE).is_file() and (old / STATE_FILE).is_file():
        last = old  # killed between the two renames of replace_directory
    if not (last / STATE_FILE).is_file():
        return None
    verify_state_checksum(last)
    try:
        state = torch.load(last / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged pickle raises almost anything
        raise SmnerError(
            f"resume: {last / STATE_FILE} cannot be read ({type(exc).__name__}); "
            "start afresh without --resume"
        ) from None
    if not isinstance(state, dict):
        raise SmnerError(f"resume: {last / STATE_FILE} is not a training state")
    return last, state


def load_checkpoint_model(folder: Path) -> tuple[NERModel, Processor]:
    """The model and processor saved in a checkpoint folder (see :func:`load_last`)."""
    model = NERModel.from_pretrained(folder / "model")
    return model, Processor.from_pretrained(folder / "model")


def check_resumable(
    state: dict[str, Any], folder: Path, train: TrainConfig, world_size: int, train_posts: int
) -> None:
    """Refuse to continue under settings that change the batches or their shuffling.

    Each epoch's order and batches come from the seed, the batch size, accumulation, length
    grouping, the number of processes and of training posts; changing one would silently mix
    two runs.
    Raising ``train.epochs`` is allowed: the schedule is rebuilt for the new total.
    """
    saved = state.get("config", {}).get("train", {})
    settings = [
        (f"train.{key}", getattr(train, key), saved.get(key))
        for key in ("seed", "batch_size", "accumulate", "group_by_length")
    ]
    settings.append(("the world size", world_size, state.get("world_size")))
    settings.append(("the number of training posts", train_posts, state.get("train_posts")))
    for name, now, then in settings:
        if then is not None and now != then:
            raise SmnerError(f"resume: {name} is {now} but the checkpoint in {folder} used {then}")


def trim_log(output_dir: Path, epochs_done: int) -> None:
    """Drop records of epochs the checkpoint does not include (they will be redone)."""
    path = output_dir / LOG_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("epoch", 0) <= epochs_done:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def remove_stale_staging(output_dir: Path, log: Callable[[str], None]) -> None:
    """Delete what a killed run left half-written: staging folders and temporary files.

    Called with the run's lock held, so nothing else can be writing them.
    """
    for path in sorted(output_dir.glob(".*")):
        staged = path.is_dir() and path.name.startswith((".last.", ".best."))
        temporary = path.is_file() and path.name.endswith(".tmp")
        if staged or temporary:
            log(f"removing {path}, left half-written by a run that was stopped")
            if staged:
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def finish_run_folder(output_dir: Path, keep_last: bool, log: Callable[[str], None]) -> None:
    """Model cards with the final log and test scores; ``last/`` dropped unless kept."""
    if (output_dir / "best" / "config.json").is_file():
        refresh_run_cards(output_dir)
    if not keep_last:
        for name in ("last", "last.old"):
            shutil.rmtree(output_dir / name, ignore_errors=True)
        log(f"removed {output_dir / 'last'} (train.keep_last is false)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of one epoch; a function of (seed, epoch) only, so resume replays it."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()
