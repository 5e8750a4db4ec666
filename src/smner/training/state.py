"""The trainer's progress through a run: what a checkpoint saves and ``--resume`` restores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class RunState:
    """Where a run stands. A checkpoint stores these fields beside the optimizer's state (the
    same keys as before this class existed, so older checkpoints resume)."""

    #: epochs finished
    epoch: int = 0
    #: optimizer steps done in the epoch under way (0 at an epoch's start)
    step_in_epoch: int = 0
    #: optimizer steps done in the whole run
    global_step: int = 0
    #: the best dev F1 so far (-1 before the first evaluation)
    best_f1: float = -1.0
    #: the 1-based epoch that reached it
    best_epoch: int = 0
    #: epochs since the best one (early stopping counts them)
    bad_epochs: int = 0
    #: early stopping ended the run
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, saved: Mapping[str, Any]) -> RunState:
        """The state of a checkpoint's dict (which holds the optimizer's state too)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})
