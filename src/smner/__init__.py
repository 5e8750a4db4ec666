"""smner: span-based multimodal named entity recognition for social-media posts."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from smner.deprecated import register as _register_moved_modules
from smner.version import __version__

_register_moved_modules()

if TYPE_CHECKING:
    from smner.data.frames import read_conll, write_conll
    from smner.data.posts import PostInput
    from smner.data.predictions import Mention, PostPrediction
    from smner.predict.predictor import Predictor
    from smner.processing.processor import Processor
    from smner.training.trainer import train

# Lazy: `import smner` (and the CLI's --help) must not pay for importing torch.
_LAZY = {
    "Predictor": "smner.predict.predictor",
    "PostPrediction": "smner.predict.predictor",
    "Mention": "smner.predict.predictor",
    "PostInput": "smner.data.posts",
    "Processor": "smner.processing.processor",
    "train": "smner.training.trainer",
    "read_conll": "smner.data.frames",
    "write_conll": "smner.data.frames",
}

__all__ = [
    "Mention",
    "PostInput",
    "PostPrediction",
    "Predictor",
    "Processor",
    "__version__",
    "read_conll",
    "train",
    "write_conll",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smner' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__", "__spec__"})
