"""smner: span-based multimodal named entity recognition for social-media posts."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from smner.version import __version__

if TYPE_CHECKING:
    from smner.dataframe import read_conll, write_conll
    from smner.inputs import PostInput
    from smner.predict import Mention, PostPrediction, Predictor
    from smner.processor import Processor
    from smner.training import train

# Lazy: `import smner` (and the CLI's --help) must not pay for importing torch.
_LAZY = {
    "Predictor": "smner.predict",
    "PostPrediction": "smner.predict",
    "Mention": "smner.predict",
    "PostInput": "smner.inputs",
    "Processor": "smner.processor",
    "train": "smner.training",
    "read_conll": "smner.dataframe",
    "write_conll": "smner.dataframe",
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
