"""Training: one trainer for every model, its epoch-end callbacks, run folders, optimisation,
box targets and distributed set-up. Names are resolved lazily (torch is imported on use)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smner.training.trainer import Trainer, TrainResult, train

_LAZY = {
    "Trainer": "smner.training.trainer",
    "TrainResult": "smner.training.trainer",
    "train": "smner.training.trainer",
}

__all__ = ["TrainResult", "Trainer", "train"]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smner.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
